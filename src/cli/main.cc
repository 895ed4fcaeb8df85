// The tetra command line: one binary, one subcommand per job.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/logging.h"
#include "cli/bench.h"
#include "cli/commands.h"
#include "cli/quantize.h"
#include "cli/router.h"
#include "cli/serve.h"

int main(int argc, char** argv) {
  CLI::App app{"tetra: an inference server for Mixture-of-Experts language models"};
  app.require_subcommand(1);
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("tetra: ") + e.what() + "\n";
  });
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  tetra::cli::ServeFlags serve;
  tetra::cli::AddServeCommand(app, serve);
  tetra::cli::GenerateFlags generate;
  tetra::cli::AddGenerateCommand(app, generate);
  tetra::cli::InfoFlags info;
  tetra::cli::AddInfoCommand(app, info);
  tetra::cli::PerplexityFlags perplexity;
  tetra::cli::AddPerplexityCommand(app, perplexity);
  tetra::cli::TokenizeFlags tokenize;
  tetra::cli::AddTokenizeCommand(app, tokenize);
  tetra::cli::BenchFlags bench;
  tetra::cli::AddBenchCommand(app, bench);
  tetra::cli::QuantizeFlags quantize;
  tetra::cli::AddQuantizeCommand(app, quantize);
  tetra::cli::RouterFlags router;
  tetra::cli::AddRouterCommand(app, router);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  tetra::InitLogging(log_level);

  int code = 2;
  if (app.got_subcommand("serve")) code = tetra::cli::RunServe(serve);
  if (app.got_subcommand("generate")) code = tetra::cli::RunGenerate(generate);
  if (app.got_subcommand("info")) code = tetra::cli::RunInfo(info);
  if (app.got_subcommand("tokenize")) code = tetra::cli::RunTokenize(tokenize);
  if (app.got_subcommand("perplexity")) code = tetra::cli::RunPerplexity(perplexity);
  if (app.got_subcommand("bench")) code = tetra::cli::RunBench(bench);
  if (app.got_subcommand("quantize")) code = tetra::cli::RunQuantize(quantize);
  if (app.got_subcommand("router")) code = tetra::cli::RunRouter(router);
  std::fflush(stdout);
  return code;
}
