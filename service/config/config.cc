#include "service/config/config.h"

#include <fstream>
#include <functional>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace pgbus::config {
namespace {

struct Setting {
  const char* name;  // flag and file key; env is PGBUS_ + upper(name)
  const char* help;
  bool secret;       // refused as a flag: `ps` would show it
  std::function<absl::Status(Config&, const std::string&)> set;
  std::function<std::string(const Config&)> show;
  bool is_bool = false;  // `--name` alone means true
};

std::function<absl::Status(Config&, const std::string&)> Int(
    int Config::*field, int64_t min, int64_t max, const char* name) {
  return [=](Config& c, const std::string& v) -> absl::Status {
    int64_t n;
    if (!absl::SimpleAtoi(v, &n) || n < min || n > max) {
      return absl::InvalidArgumentError(absl::StrCat(
          "setting ", name, "=\"", v, "\": expected an integer from ", min,
          " to ", max));
    }
    c.*field = static_cast<int>(n);
    return absl::OkStatus();
  };
}

std::function<absl::Status(Config&, const std::string&)> Str(
    std::string Config::*field, bool allow_empty, const char* name) {
  return [=](Config& c, const std::string& v) -> absl::Status {
    if (!allow_empty && v.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("setting ", name, " must not be empty"));
    }
    c.*field = v;
    return absl::OkStatus();
  };
}

std::function<absl::Status(Config&, const std::string&)> Bool(bool Config::*field,
                                                             const char* name) {
  return [=](Config& c, const std::string& v) -> absl::Status {
    std::string l = absl::AsciiStrToLower(v);
    if (l == "true" || l == "1" || l == "yes" || l == "on") {
      c.*field = true;
    } else if (l == "false" || l == "0" || l == "no" || l == "off") {
      c.*field = false;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("setting ", name, "=\"", v, "\": expected true or false"));
    }
    return absl::OkStatus();
  };
}

std::string ShowBool(bool b) { return b ? "true" : "false"; }

const std::vector<Setting>& Settings() {
  static const auto* settings = new std::vector<Setting>{
      {"listen", "host:port to serve gRPC on (port 0: any free port)", false,
       Str(&Config::listen, false, "listen"),
       [](const Config& c) { return c.listen; }},
      {"database_url", "libpq connection string of pgbusd's role", true,
       Str(&Config::database_url, false, "database_url"),
       [](const Config&) { return std::string("(unset)"); }},
      {"dev_mode", "DEVELOPMENT ONLY: no authentication, every call is default_tenant", false,
       Bool(&Config::dev_mode, "dev_mode"), [](const Config& c) { return ShowBool(c.dev_mode); },
       true},
      {"default_tenant", "the tenant of every call in dev mode", false,
       Str(&Config::default_tenant, false, "default_tenant"),
       [](const Config& c) { return c.default_tenant; }},
      {"auth_cache_ms", "how long a looked-up API key is trusted (ms)", false,
       Int(&Config::auth_cache_ms, 0, 600000, "auth_cache_ms"),
       [](const Config& c) { return std::to_string(c.auth_cache_ms); }},
      {"tls_cert_file", "TLS certificate chain (PEM); serves TLS only when set", false,
       Str(&Config::tls_cert_file, true, "tls_cert_file"),
       [](const Config& c) { return c.tls_cert_file; }},
      {"tls_key_file", "TLS private key (PEM file)", false,
       Str(&Config::tls_key_file, true, "tls_key_file"),
       [](const Config& c) { return c.tls_key_file; }},
      {"tls_client_ca_file", "mutual TLS: CA bundle client certificates must chain to", false,
       Str(&Config::tls_client_ca_file, true, "tls_client_ca_file"),
       [](const Config& c) { return c.tls_client_ca_file; }},
      {"tls_client_tenant_from_cert",
       "mutual TLS: a call without a key runs as the tenant named by its certificate's CN",
       false, Bool(&Config::tls_client_tenant_from_cert, "tls_client_tenant_from_cert"),
       [](const Config& c) { return ShowBool(c.tls_client_tenant_from_cert); }, true},
      {"max_streams", "Subscribe streams this process serves at most", false,
       Int(&Config::max_streams, 1, 1000000, "max_streams"),
       [](const Config& c) { return std::to_string(c.max_streams); }},
      {"max_call_memory_mb",
       "payload memory of calls in flight, from decode to commit (MiB); UNAVAILABLE beyond",
       false, Int(&Config::max_call_memory_mb, 16, 1 << 20, "max_call_memory_mb"),
       [](const Config& c) { return std::to_string(c.max_call_memory_mb); }},
      {"max_calls_per_connection",
       "calls one HTTP/2 connection may have open at once (more wait in the client)", false,
       Int(&Config::max_calls_per_connection, 1, 1 << 20, "max_calls_per_connection"),
       [](const Config& c) { return std::to_string(c.max_calls_per_connection); }},
      {"workers", "threads and Postgres connections for database work", false,
       Int(&Config::workers, 1, 256, "workers"),
       [](const Config& c) { return std::to_string(c.workers); }},
      {"max_queued_tasks", "queued database tasks before UNAVAILABLE", false,
       Int(&Config::max_queued_tasks, 1, 1000000, "max_queued_tasks"),
       [](const Config& c) { return std::to_string(c.max_queued_tasks); }},
      {"publish_committers", "threads committing coalesced publishes", false,
       Int(&Config::publish_committers, 1, 64, "publish_committers"),
       [](const Config& c) { return std::to_string(c.publish_committers); }},
      {"publish_max_batch", "most messages in one group commit", false,
       Int(&Config::publish_max_batch, 1, 100000, "publish_max_batch"),
       [](const Config& c) { return std::to_string(c.publish_max_batch); }},
      {"inline_payload_limit", "largest payload carried inline (bytes)", false,
       [](Config& c, const std::string& v) -> absl::Status {
         int64_t n;
         if (!absl::SimpleAtoi(v, &n) || n < 1024 || n > 3 * 1024 * 1024) {
           return absl::InvalidArgumentError(absl::StrCat(
               "setting inline_payload_limit=\"", v,
               "\": expected bytes from 1024 to 3145728 (the gRPC message "
               "limit is 4 MiB)"));
         }
         c.inline_payload_limit = n;
         return absl::OkStatus();
       },
       [](const Config& c) { return std::to_string(c.inline_payload_limit); }},
      {"max_payload_bytes", "largest payload UploadPayload accepts (bytes)", false,
       [](Config& c, const std::string& v) -> absl::Status {
         int64_t n;
         if (!absl::SimpleAtoi(v, &n) || n < 1 || n > (int64_t{1} << 40)) {
           return absl::InvalidArgumentError(absl::StrCat(
               "setting max_payload_bytes=\"", v, "\": expected bytes from 1 to 2^40"));
         }
         c.max_payload_bytes = n;
         return absl::OkStatus();
       },
       [](const Config& c) { return std::to_string(c.max_payload_bytes); }},
      {"poll_interval_ms", "fallback poll for new messages (ms)", false,
       Int(&Config::poll_interval_ms, 10, 60000, "poll_interval_ms"),
       [](const Config& c) { return std::to_string(c.poll_interval_ms); }},
      {"reap_interval_ms", "how often expired messages are deleted (ms)", false,
       Int(&Config::reap_interval_ms, 10, 3600000, "reap_interval_ms"),
       [](const Config& c) { return std::to_string(c.reap_interval_ms); }},
      {"statement_timeout_ms", "statement_timeout of every statement (ms)",
       false, Int(&Config::statement_timeout_ms, 100, 3600000, "statement_timeout_ms"),
       [](const Config& c) { return std::to_string(c.statement_timeout_ms); }},
      {"shutdown_grace_ms", "time to finish calls after SIGTERM (ms)", false,
       Int(&Config::shutdown_grace_ms, 0, 600000, "shutdown_grace_ms"),
       [](const Config& c) { return std::to_string(c.shutdown_grace_ms); }},
      {"health_interval_ms", "how often readiness checks that Postgres answers (ms)", false,
       Int(&Config::health_interval_ms, 100, 600000, "health_interval_ms"),
       [](const Config& c) { return std::to_string(c.health_interval_ms); }},
      {"metrics_listen", "host:port to serve Prometheus metrics on (/metrics); empty: off",
       false, Str(&Config::metrics_listen, true, "metrics_listen"),
       [](const Config& c) { return c.metrics_listen; }},
      {"metrics_backlog_interval_ms",
       "how often per-subscription backlog metrics are queried (ms)", false,
       Int(&Config::metrics_backlog_interval_ms, 1000, 3600000, "metrics_backlog_interval_ms"),
       [](const Config& c) { return std::to_string(c.metrics_backlog_interval_ms); }},
      {"port_file", "write the bound port to this file once serving", false,
       Str(&Config::port_file, true, "port_file"),
       [](const Config& c) { return c.port_file; }},
  };
  return *settings;
}

const Setting* Find(absl::string_view name) {
  for (const auto& s : Settings()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

std::string EnvName(const char* name) {
  return "PGBUS_" + absl::AsciiStrToUpper(name);
}

std::string FlagName(absl::string_view name) {
  std::string flag(name);
  for (char& ch : flag) {
    if (ch == '_') ch = '-';
  }
  return flag;
}

// Reads `key = value` lines; '#' starts a comment.
absl::StatusOr<std::map<std::string, std::string>> ReadFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("setting config=\"", path, "\": cannot read that file"));
  }
  std::map<std::string, std::string> out;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    std::pair<std::string, std::string> kv = absl::StrSplit(l, absl::MaxSplits('=', 1));
    std::string key(absl::StripAsciiWhitespace(kv.first));
    if (!Find(key) || l.find('=') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": expected `setting = value` with a known setting"));
    }
    out[key] = std::string(absl::StripAsciiWhitespace(kv.second));
  }
  return out;
}

}  // namespace

absl::StatusOr<Config> Load(const std::vector<std::string>& args,
                            const std::map<std::string, std::string>& env) {
  // Flags first, so that --config is known before the file is read.
  std::map<std::string, std::string> flags;
  std::string config_file;
  if (auto it = env.find("PGBUS_CONFIG"); it != env.end()) config_file = it->second;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\"; see --help"));
    }
    std::string name, value;
    if (size_t eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else {
      name = std::string(arg);
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      if (const Setting* s = Find(name); s && s->is_bool) {
        value = "true";
      } else if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", FlagName(name),
                                                       " needs a value"));
      } else {
        value = args[++i];
      }
    }
    for (char& ch : name) {
      if (ch == '-') ch = '_';
    }
    if (name == "config") {
      config_file = value;
      continue;
    }
    const Setting* s = Find(name);
    if (!s) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", FlagName(name), "; see --help"));
    }
    if (s->secret) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", FlagName(name), " is a secret and is not taken as a flag (ps would show it): set ",
          EnvName(s->name), " or put it in the --config file"));
    }
    flags[name] = value;
  }

  std::map<std::string, std::string> file;
  if (!config_file.empty()) {
    auto read = ReadFile(config_file);
    if (!read.ok()) return read.status();
    file = *std::move(read);
  }

  Config config;
  for (const auto& s : Settings()) {
    const std::string* value = nullptr;
    if (auto it = flags.find(s.name); it != flags.end()) {
      value = &it->second;
    } else if (auto it = env.find(EnvName(s.name)); it != env.end()) {
      value = &it->second;
    } else if (auto it = file.find(s.name); it != file.end()) {
      value = &it->second;
    }
    if (value) {
      if (absl::Status st = s.set(config, *value); !st.ok()) return st;
    }
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "settings tls_cert_file and tls_key_file: set both (TLS) or neither (plaintext)");
  }
  if (!config.tls_client_ca_file.empty() && config.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "setting tls_client_ca_file needs tls_cert_file and tls_key_file: mutual TLS is TLS");
  }
  if (config.tls_client_tenant_from_cert && config.tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "setting tls_client_tenant_from_cert needs tls_client_ca_file: only a verified client "
        "certificate may name a tenant");
  }
  return config;
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    absl::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == absl::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

std::string Usage() {
  Config defaults;
  std::string out;
  for (const auto& s : Settings()) {
    absl::StrAppend(&out, "  ", s.secret ? "" : absl::StrCat("--", FlagName(s.name), " "),
                    "(", EnvName(s.name), ")  ", s.help, "  [", s.show(defaults), "]\n");
  }
  absl::StrAppend(&out, "  --config FILE (PGBUS_CONFIG)  key = value file of the settings above\n");
  return out;
}

}  // namespace pgbus::config
