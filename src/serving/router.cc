#include "serving/router.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <limits>

#include "base/logging.h"
#include "serving/discovery.h"
#include "serving/http_client.h"
#include "serving/prometheus.h"

namespace tetra::serving {
namespace {

uint64_t MixHash(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The sum of a series' samples in Prometheus text (every label set); 0 when absent.
double PrometheusValue(const std::string& text, std::string_view name) {
  double sum = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    if (line.size() > name.size() && line.substr(0, name.size()) == name &&
        (line[name.size()] == ' ' || line[name.size()] == '{')) {
      const size_t space = line.rfind(' ');
      sum += std::strtod(std::string(line.substr(space + 1)).c_str(), nullptr);
    }
    pos = end + 1;
  }
  return sum;
}

}  // namespace


namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct Router::Io {
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  std::thread thread;
};

namespace {

constexpr const char* kJson = "application/json";

std::string ErrorJson(const std::string& type, const std::string& message) {
  return nlohmann::json{{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}}.dump();
}

// One request relayed to an instance and its answer back, on its own strand.
class Relay : public std::enable_shared_from_this<Relay> {
 public:
  Relay(net::io_context& ioc, Router::Instance* target, Router::Instance* prefill, HttpRequest request,
        std::shared_ptr<HttpExchange> exchange, std::function<Router::Instance*(Router::Instance*)> fallback)
      : ioc_(ioc),
        strand_(net::make_strand(ioc)),
        resolver_(strand_),
        stream_(strand_),
        target_(target),
        prefill_(prefill),
        request_(std::move(request)),
        exchange_(std::move(exchange)),
        fallback_(std::move(fallback)) {
    target_->in_flight.fetch_add(1);
    target_->requests.fetch_add(1);
    if (prefill_ != nullptr) {  // the request's prompt is there while this relay lives (or shorter)
      prefill_->in_flight.fetch_add(1);
      prefill_->requests.fetch_add(1);
    }
  }
  ~Relay() {
    target_->in_flight.fetch_sub(1);
    if (prefill_ != nullptr) prefill_->in_flight.fetch_sub(1);
  }

  void Start() {
    std::weak_ptr<Relay> weak = weak_from_this();
    exchange_->OnDisconnect([weak] {
      if (auto self = weak.lock()) {
        // The client left: close upstream, which the instance sees as a disconnect (it aborts the request).
        net::post(self->strand_, [self] {
          beast::error_code ignored;
          self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
          self->stream_.close();
        });
      }
    });
    net::post(strand_, [self = shared_from_this()] { self->Resolve(); });
  }

 private:
  void Resolve() {
    resolver_.async_resolve(target_->host, std::to_string(target_->port),
                            [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type results) {
                              if (ec) return self->FailBeforeAnswer(ec);
                              self->stream_.expires_after(std::chrono::seconds(10));
                              self->stream_.async_connect(results, [self](beast::error_code ec2, auto) {
                                if (ec2) return self->FailBeforeAnswer(ec2);
                                self->Send();
                              });
                            });
  }

  void Send() {
    upstream_ = {request_.method == "GET" ? http::verb::get : http::verb::post, request_.path, 11};
    upstream_.set(http::field::host, fmt::format("{}:{}", target_->host, target_->port));
    if (!request_.authorization.empty()) upstream_.set(http::field::authorization, request_.authorization);
    if (prefill_ != nullptr) upstream_.set("X-Tetra-Prefill", prefill_->url);
    if (request_.method != "GET") {
      upstream_.set(http::field::content_type, kJson);
      upstream_.body() = request_.body;
      upstream_.prepare_payload();
    }
    stream_.expires_never();  // a generation takes as long as it takes; a dead peer closes the socket
    http::async_write(stream_, upstream_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->FailBeforeAnswer(ec);
      // No limit: a stream is as long as its generation (not boost::none, which
      // Boost 1.74 compares as smaller than any length).
      self->parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
      http::async_read_header(self->stream_, self->buffer_, self->parser_, [self](beast::error_code ec2, size_t) {
        if (ec2) return self->FailBeforeAnswer(ec2);
        self->OnHeader();
      });
    });
  }

  void OnHeader() {
    status_ = static_cast<int>(parser_.get().result_int());
    content_type_ = std::string(parser_.get()[http::field::content_type]);
    streaming_ = content_type_.rfind("text/event-stream", 0) == 0;
    if (streaming_) exchange_->StartStream(status_, content_type_);
    ReadSome();
  }

  void ReadSome() {
    if (parser_.is_done()) return Done();
    parser_.get().body().data = chunk_;
    parser_.get().body().size = sizeof(chunk_);
    // read_some: back as soon as some body arrived, so an SSE stream's events
    // go on at once (async_read would wait for the buffer to fill).
    http::async_read_some(stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::need_buffer) ec = {};
      const size_t got = sizeof(self->chunk_) - self->parser_.get().body().size;
      if (got > 0) {
        if (self->streaming_) {
          self->exchange_->Write(std::string(self->chunk_, got));
        } else {
          self->body_.append(self->chunk_, got);
        }
      }
      if (ec) return self->FailMidAnswer(ec);
      self->ReadSome();
    });
  }

  void Done() {
    if (streaming_) {
      exchange_->End();
    } else {
      exchange_->Respond(status_, content_type_.empty() ? kJson : content_type_, std::move(body_));
    }
    Close();
  }

  // Nothing reached the client yet: try another instance once, else 502.
  void FailBeforeAnswer(beast::error_code ec) {
    target_->failures.fetch_add(1);
    TETRA_LOG_WARN("router: {} failed: {}", target_->url, ec.message());
    if (!retried_ && fallback_) {
      if (Router::Instance* other = fallback_(target_)) {
        retried_ = true;
        auto next = std::make_shared<Relay>(ioc_, other, prefill_,
                                            std::move(request_), exchange_, nullptr);
        next->retried_ = true;
        next->Start();
        return;
      }
    }
    exchange_->Respond(502, kJson,
                       ErrorJson("server_error", fmt::format("the decode instance {} is unreachable ({})", target_->url,
                                                             ec.message())));
  }

  // The answer was under way: end it with an error the client can see.
  void FailMidAnswer(beast::error_code ec) {
    target_->failures.fetch_add(1);
    if (streaming_) {
      exchange_->Write("data: " + ErrorJson("server_error", fmt::format("the decode instance {} failed mid-answer ({})",
                                                                        target_->url, ec.message())) +
                       "\n\n");
      exchange_->End();
    } else {
      exchange_->Respond(502, kJson, ErrorJson("server_error", fmt::format("the decode instance {} failed ({})",
                                                                           target_->url, ec.message())));
    }
    Close();
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  net::io_context& ioc_;
  net::strand<net::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  Router::Instance* target_;
  Router::Instance* prefill_;  // nullptr: no prefill instance (the decode instance prefills)
  HttpRequest request_;
  std::shared_ptr<HttpExchange> exchange_;
  std::function<Router::Instance*(Router::Instance*)> fallback_;
  bool retried_ = false;
  http::request<http::string_body> upstream_;
  beast::flat_buffer buffer_;
  http::response_parser<http::buffer_body> parser_;
  char chunk_[16384];
  int status_ = 0;
  std::string content_type_;
  bool streaming_ = false;
  std::string body_;
};

}  // namespace

StatusOr<std::unique_ptr<Router>> Router::Create(const RouterOptions& options) {
  if (options.decode_urls.empty() && options.etcd_url.empty()) {
    return Status::Error("tetra router: give at least one --decode URL, or --etcd");
  }
  if (!options.etcd_url.empty()) TETRA_RETURN_IF_ERROR(ParseHttpUrl(options.etcd_url).status());
  std::unique_ptr<Router> router(new Router(options));
  for (const auto* list : {&options.prefill_urls, &options.decode_urls}) {
    for (const std::string& url : *list) TETRA_RETURN_IF_ERROR(router->AddInstance(url, list == &options.decode_urls));
  }
  if (!options.etcd_url.empty()) router->Discover();
  router->io_->thread = std::thread([r = router.get()] { r->io_->ioc.run(); });
  router->health_ = std::thread([r = router.get()] { r->HealthLoop(); });
  return router;
}

Router::Router(const RouterOptions& options) : options_(options), io_(std::make_unique<Io>()) {}

Router::~Router() {
  stopping_ = true;
  if (health_.joinable()) health_.join();
  io_->work.reset();
  io_->ioc.stop();
  if (io_->thread.joinable()) io_->thread.join();
}

int ChooseInstance(const std::vector<InstanceLoad>& loads, uint64_t affinity) {
  auto load = [](const InstanceLoad& l) {
    return static_cast<double>(l.in_flight + l.waiting) + static_cast<double>(l.pending_tokens) / 512.0;
  };
  bool any_room = false;
  for (const InstanceLoad& l : loads) any_room |= l.healthy && l.kv_usage < 0.98;
  auto eligible = [&](const InstanceLoad& l) { return l.healthy && (!any_room || l.kv_usage < 0.98); };
  double least = std::numeric_limits<double>::infinity();
  for (const InstanceLoad& l : loads) {
    if (eligible(l)) least = std::min(least, load(l));
  }
  int best = -1;
  uint64_t best_weight = 0;
  for (size_t i = 0; i < loads.size(); ++i) {
    const InstanceLoad& l = loads[i];
    if (!eligible(l) || load(l) > least + (affinity != 0 ? 1.0 : 0.0)) continue;
    // Rendezvous weight: every router sends a key to the same instance.
    const uint64_t weight = affinity != 0 ? MixHash(affinity ^ l.url_hash) : 0;
    if (best < 0 || weight > best_weight || (affinity == 0 && load(l) < load(loads[best]))) {
      best = static_cast<int>(i);
      best_weight = weight;
    }
  }
  return best;
}

uint64_t AffinityKey(bool chat, const std::string& body) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return 0;
  std::string prefix;
  if (chat) {
    const auto messages = j.find("messages");
    if (messages == j.end() || !messages->is_array()) return 0;
    for (const auto& m : *messages) {
      if (!m.is_object()) continue;
      const auto content = m.find("content");
      if (content != m.end()) prefix += content->is_string() ? content->get<std::string>() : content->dump();
      if (prefix.size() >= 256) break;
    }
  } else {
    const auto prompt = j.find("prompt");
    if (prompt == j.end()) return 0;
    const nlohmann::json& p = prompt->is_array() && !prompt->empty() && !(*prompt)[0].is_number() ? (*prompt)[0] : *prompt;
    if (p.is_string()) {
      prefix = p.get<std::string>();
    } else if (p.is_array()) {
      for (size_t i = 0; i < p.size() && i < 64; ++i) prefix += p[i].dump() + ",";
    }
  }
  if (prefix.empty()) return 0;
  prefix.resize(std::min<size_t>(prefix.size(), 256));
  return MixHash(std::hash<std::string>{}(prefix)) | 1;  // never 0
}

Status Router::AddInstance(const std::string& url, bool decode) {
  TETRA_ASSIGN_OR_RETURN(auto address, ParseHttpUrl(url));
  auto instance = std::make_unique<Instance>();
  instance->url = url;
  instance->host = address.first;
  instance->port = address.second;
  instance->is_decode = decode;
  std::lock_guard<std::mutex> lock(instances_mu_);
  instances_.push_back(std::move(instance));
  return Status::Ok();
}

void Router::Discover() {
  auto found = ListInstances(options_.etcd_url);
  if (!found.ok()) {
    TETRA_LOG_WARN("router: etcd: {}", found.status().message());
    return;  // keep what is known until etcd answers again
  }
  std::vector<DiscoveredInstance> added;
  {
    std::lock_guard<std::mutex> lock(instances_mu_);
    for (auto& i : instances_) {
      if (!i->discovered) continue;
      const bool listed = std::any_of(found->begin(), found->end(), [&](const DiscoveredInstance& d) {
        return d.url == i->url && (d.role == "decode") == i->is_decode;
      });
      if (listed != i->listed.load()) TETRA_LOG_WARN("router: {} {} etcd", i->url, listed ? "is back in" : "left");
      i->listed.store(listed);
    }
    for (const DiscoveredInstance& d : *found) {
      const bool known = std::any_of(instances_.begin(), instances_.end(), [&](const auto& i) {
        return i->url == d.url && i->is_decode == (d.role == "decode");
      });
      if (!known) added.push_back(d);
    }
  }
  for (const DiscoveredInstance& d : added) {
    if (Status s = AddInstance(d.url, d.role == "decode"); !s.ok()) {
      TETRA_LOG_WARN("router: etcd lists {}: {}", d.url, s.message());
      continue;
    }
    std::lock_guard<std::mutex> lock(instances_mu_);
    instances_.back()->discovered = true;
    instances_.back()->healthy.store(false);  // until its first health check
    TETRA_LOG_INFO("router: found {} instance {} in etcd", d.role, d.url);
  }
}

Router::Instance* Router::Pick(bool decode, uint64_t affinity) {
  std::vector<Instance*> pool;
  std::vector<InstanceLoad> loads;
  std::lock_guard<std::mutex> lock(instances_mu_);
  for (auto& i : instances_) {
    if (i->is_decode != decode || !i->listed.load()) continue;
    pool.push_back(i.get());
    loads.push_back({i->healthy.load(), i->in_flight.load(), i->waiting.load(), i->pending_tokens.load(),
                     i->kv_usage.load(), std::hash<std::string>{}(i->url)});
  }
  const int chosen = ChooseInstance(loads, affinity);
  return chosen < 0 ? nullptr : pool[chosen];
}

void Router::HealthLoop() {
  while (!stopping_.load()) {
    if (!options_.etcd_url.empty()) Discover();
    std::vector<Instance*> instances;
    {
      std::lock_guard<std::mutex> lock(instances_mu_);
      for (auto& i : instances_) instances.push_back(i.get());
    }
    for (Instance* i : instances) {
      auto r = HttpCall("GET", i->host, i->port, "/health", "", std::chrono::milliseconds(1000));
      const bool healthy = r.ok() && r->status == 200;
      if (healthy) {
        auto m = HttpCall("GET", i->host, i->port, "/metrics", "", std::chrono::milliseconds(1000));
        if (m.ok() && m->status == 200) {
          i->waiting.store(static_cast<int64_t>(PrometheusValue(m->body, "tetra:num_requests_waiting")));
          i->pending_tokens.store(static_cast<int64_t>(PrometheusValue(m->body, "tetra:num_prompt_tokens_pending")));
          i->kv_usage.store(PrometheusValue(m->body, "tetra:kv_cache_usage_perc"));
        }
      }
      if (healthy != i->healthy.load()) {
        TETRA_LOG_WARN("router: {} is {}", i->url, healthy ? "back" : "down");
        i->healthy.store(healthy);
      }
    }
    const auto until = std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(static_cast<int>(options_.health_interval_seconds * 1000));
    while (!stopping_.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

std::string Router::Metrics() const {
  PrometheusWriter w;
  w.Counter("router_requests_total", static_cast<double>(requests_total_.load()),
            "Requests relayed to decode instances.");
  w.Counter("router_requests_failed_total", static_cast<double>(requests_failed_.load()),
            "Requests answered with an error by the router itself.");
  w.Counter("router_prefill_assigned_total", static_cast<double>(prefill_assigned_.load()),
            "Requests sent with a prefill instance.");
  auto labels = [](const Instance& i) {
    return PrometheusLabel("url", i.url) + "," + PrometheusLabel("role", i.is_decode ? "decode" : "prefill");
  };
  w.Header("router_instance_healthy", "gauge", "1 while the instance answers /health.");
  std::lock_guard<std::mutex> lock(instances_mu_);
  for (const auto& i : instances_) {
    if (i->listed.load()) w.Sample("router_instance_healthy", i->healthy.load() ? 1 : 0, labels(*i));
  }
  w.Header("router_instance_requests_in_flight", "gauge", "Requests the router has at the instance now.");
  for (const auto& i : instances_) {
    w.Sample("router_instance_requests_in_flight", i->in_flight.load(), labels(*i));
  }
  return w.Take();
}

void Router::Handle(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  const std::string& path = request.path;
  if (path == "/health") {
    return Pick(true) != nullptr ? exchange->Respond(200, kJson, R"({"status":"ok"})")
                                 : exchange->Respond(503, kJson, R"({"status":"no healthy decode instance"})");
  }
  if (path == "/metrics") return exchange->Respond(200, "text/plain; version=0.0.4; charset=utf-8", Metrics());
  const bool generation = path == "/v1/completions" || path == "/v1/chat/completions";
  const bool page = path == "/" || path == "/index.html";  // the chat page, as a decode instance serves it
  if (!generation && !page && path != "/v1/models") {
    return exchange->Respond(404, kJson, ErrorJson("not_found_error", fmt::format("no route {} {}", request.method, path)));
  }
  Instance* decode = Pick(true);
  if (decode == nullptr) {
    requests_failed_.fetch_add(1);
    return exchange->Respond(503, kJson, ErrorJson("server_error", "no decode instance is healthy; retry shortly"));
  }
  Instance* prefill = nullptr;
  if (generation) {
    requests_total_.fetch_add(1);
    const uint64_t affinity = AffinityKey(path == "/v1/chat/completions", request.body);
    decode = Pick(true, affinity);  // the decode side's prefix cache spares moving that KV at all
    prefill = Pick(false, affinity);
    if (prefill != nullptr) prefill_assigned_.fetch_add(1);
  }
  auto fallback = [this](Instance* failed) -> Instance* {
    failed->healthy.store(false);  // until the health checker sees it again
    return Pick(true);
  };
  std::make_shared<Relay>(io_->ioc, decode, prefill, std::move(request), std::move(exchange), fallback)->Start();
}

}  // namespace tetra::serving
