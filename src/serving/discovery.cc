#include "serving/discovery.h"

#include <boost/archive/iterators/base64_from_binary.hpp>
#include <boost/archive/iterators/binary_from_base64.hpp>
#include <boost/archive/iterators/transform_width.hpp>
#include <nlohmann/json.hpp>

#include "base/logging.h"
#include "serving/http_client.h"

namespace tetra::serving {
namespace {

using Json = nlohmann::json;
constexpr std::chrono::milliseconds kCallTimeout{2000};

StatusOr<Json> EtcdCall(const std::string& host, int port, const std::string& path, const Json& body) {
  TETRA_ASSIGN_OR_RETURN(HttpResponse r, HttpCall("POST", host, port, path, body.dump(), kCallTimeout));
  Json answer = Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (r.status != 200 || !answer.is_object()) {
    return Status::WithCode(StatusCode::kUnavailable,
                            fmt::format("etcd {}:{}{} answered {}: {}", host, port, path, r.status, r.body.substr(0, 200)));
  }
  return answer;
}

// The end of the key range of every key that starts with `prefix`.
std::string RangeEnd(std::string prefix) {
  prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

}  // namespace

std::string Base64Encode(const std::string& bytes) {
  using namespace boost::archive::iterators;
  using Encoder = base64_from_binary<transform_width<std::string::const_iterator, 6, 8>>;
  std::string out(Encoder(bytes.begin()), Encoder(bytes.end()));
  out.append((3 - bytes.size() % 3) % 3, '=');
  return out;
}

StatusOr<std::string> Base64Decode(const std::string& text) {
  using namespace boost::archive::iterators;
  using Decoder = transform_width<binary_from_base64<std::string::const_iterator>, 8, 6>;
  if (text.size() % 4 != 0) return Status::Errorf("'{}' is not base64", text);
  size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  std::string body = text.substr(0, text.size() - padding) + std::string(padding, 'A');
  try {
    std::string out(Decoder(body.begin()), Decoder(body.end()));
    out.resize(out.size() - padding);
    return out;
  } catch (const std::exception&) {
    return Status::Errorf("'{}' is not base64", text);
  }
}

StatusOr<std::vector<DiscoveredInstance>> ListInstances(const std::string& etcd_url) {
  TETRA_ASSIGN_OR_RETURN(auto address, ParseHttpUrl(etcd_url));
  TETRA_ASSIGN_OR_RETURN(Json answer, EtcdCall(address.first, address.second, "/v3/kv/range",
                                               {{"key", Base64Encode(kEtcdPrefix)},
                                                {"range_end", Base64Encode(RangeEnd(kEtcdPrefix))}}));
  std::vector<DiscoveredInstance> out;
  const auto kvs = answer.find("kvs");
  if (kvs == answer.end() || !kvs->is_array()) return out;  // none registered
  for (const Json& kv : *kvs) {
    if (!kv.is_object() || !kv.contains("key") || !kv.contains("value") || !kv["key"].is_string() ||
        !kv["value"].is_string()) {
      continue;
    }
    auto key = Base64Decode(kv["key"].get<std::string>());
    auto value = Base64Decode(kv["value"].get<std::string>());
    if (!key.ok() || !value.ok()) continue;
    const std::string rest = key->substr(sizeof(kEtcdPrefix) - 1);  // "<role>/<url>"
    const std::string role = rest.substr(0, rest.find('/'));
    if (role != "prefill" && role != "decode") continue;
    out.push_back({role, *value});
  }
  return out;
}

StatusOr<std::unique_ptr<EtcdRegistration>> EtcdRegistration::Start(const std::string& etcd_url,
                                                                    const std::string& role, const std::string& url,
                                                                    std::chrono::seconds ttl) {
  TETRA_ASSIGN_OR_RETURN(auto address, ParseHttpUrl(etcd_url));
  std::unique_ptr<EtcdRegistration> r(new EtcdRegistration());
  r->host_ = address.first;
  r->port_ = address.second;
  r->key_ = std::string(kEtcdPrefix) + role + "/" + url;
  r->value_ = url;
  r->ttl_ = ttl;
  TETRA_RETURN_IF_ERROR(r->Register());
  r->thread_ = std::thread([p = r.get()] { p->KeepAlive(); });
  return r;
}

Status EtcdRegistration::Register() {
  TETRA_ASSIGN_OR_RETURN(Json grant, EtcdCall(host_, port_, "/v3/lease/grant", {{"TTL", ttl_.count()}}));
  if (!grant.contains("ID")) return Status::Errorf("etcd granted no lease: {}", grant.dump());
  const Json& id = grant["ID"];
  lease_ = id.is_string() ? id.get<std::string>() : id.dump();
  TETRA_ASSIGN_OR_RETURN(Json put, EtcdCall(host_, port_, "/v3/kv/put",
                                            {{"key", Base64Encode(key_)}, {"value", Base64Encode(value_)},
                                             {"lease", lease_}}));
  (void)put;
  return Status::Ok();
}

void EtcdRegistration::KeepAlive() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, ttl_ / 3, [&] { return stopping_; })) {
    lock.unlock();
    auto answer = EtcdCall(host_, port_, "/v3/lease/keepalive", {{"ID", lease_}});
    // An expired lease answers without a TTL: register anew.
    const bool alive = answer.ok() && answer->contains("result") && (*answer)["result"].contains("TTL");
    if (!alive) {
      if (Status s = Register(); !s.ok()) TETRA_LOG_WARN("etcd registration of {}: {}", key_, s.message());
    }
    lock.lock();
  }
}

EtcdRegistration::~EtcdRegistration() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  (void)EtcdCall(host_, port_, "/v3/lease/revoke", {{"ID", lease_}});  // best effort: else the TTL removes it
}

}  // namespace tetra::serving
