#include "service/admin_cli.h"

#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "service/auth/api_key.h"
#include "service/auth/principal.h"
#include "service/bus/validation.h"
#include "service/common/topic_pattern.h"
#include "service/store/postgres/tenant_admin.h"

namespace pgbus {

const char kAdminUsage[] =
    "operator commands (PGBUS_DATABASE_URL: the schema owner's connection string):\n"
    "  pgbusd tenant create NAME [--max-message-bytes N] [--max-stored-bytes N]\n"
    "                            [--max-publish-rate N] [--max-streams N]\n"
    "  pgbusd tenant set NAME [--max-... N|none ...]   change quotas (none: no limit)\n"
    "  pgbusd tenant show NAME                         quotas and stored bytes\n"
    "  pgbusd tenant list\n"
    "  pgbusd key issue TENANT [--scopes publish,subscribe,admin] [--topics PATTERN,...]\n"
    "                          [--description TEXT]    prints the key once, on stdout\n"
    "  pgbusd key list TENANT\n"
    "  pgbusd key revoke KEY_ID                        refused within auth_cache_ms\n";

namespace {

struct Failure {
  int code;
  std::string message;
};

// Flags after the positional arguments: --name value.
struct Parsed {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
};

std::optional<Failure> Parse(const std::vector<std::string>& args,
                             const std::vector<std::string>& known, Parsed* out) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) != 0) {
      out->positional.push_back(args[i]);
      continue;
    }
    std::string name = args[i].substr(2), value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return Failure{2, absl::StrCat("flag --", name, " needs a value")};
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return Failure{2, absl::StrCat("unknown flag --", name)};
    }
    out->flags[name] = value;
  }
  return std::nullopt;
}

template <typename T>
std::optional<Failure> Quota(const Parsed& p, const char* flag, std::optional<T>* field) {
  auto it = p.flags.find(flag);
  if (it == p.flags.end()) return std::nullopt;
  if (it->second == "none") {
    field->reset();
    return std::nullopt;
  }
  int64_t n;
  if (!absl::SimpleAtoi(it->second, &n) || n < 0 ||
      n > static_cast<int64_t>(std::numeric_limits<T>::max())) {
    return Failure{2, absl::StrCat("--", flag, " \"", it->second,
                                   "\": expected a non-negative integer or none")};
  }
  *field = static_cast<T>(n);
  return std::nullopt;
}

std::string Show(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "none"; }
std::string Show(const std::optional<int>& v) { return v ? std::to_string(*v) : "none"; }

const std::vector<std::string> kQuotaFlags = {"max-message-bytes", "max-stored-bytes",
                                              "max-publish-rate", "max-streams"};

std::optional<Failure> ApplyQuotas(const Parsed& p, model::TenantRecord* t) {
  if (auto f = Quota(p, "max-message-bytes", &t->max_message_bytes)) return f;
  if (auto f = Quota(p, "max-stored-bytes", &t->max_stored_bytes)) return f;
  if (auto f = Quota(p, "max-publish-rate", &t->max_publish_rate)) return f;
  if (auto f = Quota(p, "max-streams", &t->max_streams)) return f;
  if ((t->max_message_bytes && *t->max_message_bytes == 0) ||
      (t->max_publish_rate && *t->max_publish_rate == 0)) {
    return Failure{2, "--max-message-bytes and --max-publish-rate must be at least 1"};
  }
  return std::nullopt;
}

void PrintTenant(const model::TenantRecord& t) {
  std::printf(
      "tenant: %s\ncreated: %s\nmax_message_bytes: %s\nmax_stored_bytes: %s\n"
      "max_publish_rate: %s\nmax_streams: %s\nstored_bytes: %lld\n",
      t.tenant.c_str(), absl::FormatTime(absl::RFC3339_sec, t.created_at, absl::UTCTimeZone()).c_str(),
      Show(t.max_message_bytes).c_str(), Show(t.max_stored_bytes).c_str(),
      Show(t.max_publish_rate).c_str(), Show(t.max_streams).c_str(),
      static_cast<long long>(t.stored_bytes));
}

std::optional<Failure> Fail(const absl::Status& st) {
  if (st.ok()) return std::nullopt;
  return Failure{1, std::string(st.message())};
}

std::optional<Failure> Tenant(store::postgres::TenantAdmin& admin, const Parsed& p) {
  const auto& pos = p.positional;
  if (pos.empty()) return Failure{2, "tenant: expected create, set, show or list"};
  const std::string& verb = pos[0];
  if (verb == "list" && pos.size() == 1) {
    auto tenants = admin.ListTenants();
    if (!tenants.ok()) return Fail(tenants.status());
    for (const auto& t : *tenants) {
      std::printf("%s\tstored_bytes=%lld\n", t.tenant.c_str(),
                  static_cast<long long>(t.stored_bytes));
    }
    return std::nullopt;
  }
  if (pos.size() != 2) return Failure{2, absl::StrCat("tenant ", verb, ": expected one NAME")};
  const std::string& name = pos[1];
  if (absl::Status st = bus::ValidateName("tenant", name); !st.ok()) {
    return Failure{2, std::string(st.message())};
  }
  if (verb == "create") {
    model::TenantRecord t;
    t.tenant = name;
    if (auto f = ApplyQuotas(p, &t)) return f;
    if (auto f = Fail(admin.CreateTenant(t))) return f;
    std::fprintf(stderr, "created tenant %s; issue a key with `pgbusd key issue %s`\n",
                 name.c_str(), name.c_str());
    return std::nullopt;
  }
  if (verb == "set" || verb == "show") {
    auto t = admin.GetTenant(name);
    if (!t.ok()) return Fail(t.status());
    if (verb == "set") {
      if (auto f = ApplyQuotas(p, &*t)) return f;
      if (auto f = Fail(admin.UpdateQuotas(*t))) return f;
    }
    PrintTenant(*t);
    return std::nullopt;
  }
  return Failure{2, absl::StrCat("tenant: unknown command \"", verb, "\"")};
}

std::optional<Failure> Key(store::postgres::TenantAdmin& admin, const Parsed& p) {
  const auto& pos = p.positional;
  if (pos.size() != 2) {
    return Failure{2, "key: expected `issue TENANT`, `list TENANT` or `revoke KEY_ID`"};
  }
  const std::string& verb = pos[0];
  if (verb == "issue") {
    model::ApiKeyRecord k;
    k.tenant = pos[1];
    auto flag = [&](const char* name, const char* fallback) {
      auto it = p.flags.find(name);
      return it == p.flags.end() ? std::string(fallback) : it->second;
    };
    for (absl::string_view s : absl::StrSplit(flag("scopes", "publish,subscribe"), ',')) {
      auto scope = auth::ParseScope(s);
      if (!scope.ok()) return Failure{2, std::string(scope.status().message())};
      k.scopes.emplace_back(s);
    }
    for (absl::string_view t : absl::StrSplit(flag("topics", ">"), ',')) {
      if (absl::Status st = ValidateTopicPattern("--topics", t); !st.ok()) {
        return Failure{2, std::string(st.message())};
      }
      k.topics.emplace_back(t);
    }
    k.description = flag("description", "");
    auto fresh = auth::GenerateKey();
    if (!fresh.ok()) return Fail(fresh.status());
    k.key_id = fresh->key_id;
    k.secret_sha256 = fresh->secret_sha256;
    if (auto f = Fail(admin.InsertKey(k))) return f;
    std::printf("%s\n", fresh->token.c_str());
    std::fprintf(stderr,
                 "issued key %s for tenant %s: scopes %s, topics %s.\n"
                 "It is shown this once and stored only as a hash: keep it now.\n",
                 k.key_id.c_str(), k.tenant.c_str(), absl::StrJoin(k.scopes, ",").c_str(),
                 absl::StrJoin(k.topics, ",").c_str());
    return std::nullopt;
  }
  if (verb == "list") {
    auto keys = admin.ListKeys(pos[1]);
    if (!keys.ok()) return Fail(keys.status());
    std::printf("KEY_ID\tSCOPES\tTOPICS\tCREATED\tREVOKED\tDESCRIPTION\n");
    for (const auto& k : *keys) {
      std::printf("%s\t%s\t%s\t%s\t%s\t%s\n", k.key_id.c_str(),
                  absl::StrJoin(k.scopes, ",").c_str(), absl::StrJoin(k.topics, ",").c_str(),
                  absl::FormatTime(absl::RFC3339_sec, k.created_at, absl::UTCTimeZone()).c_str(),
                  k.revoked_at ? absl::FormatTime(absl::RFC3339_sec, *k.revoked_at,
                                                  absl::UTCTimeZone())
                                     .c_str()
                               : "-",
                  k.description.c_str());
    }
    return std::nullopt;
  }
  if (verb == "revoke") {
    auto tenant = admin.RevokeKey(pos[1]);
    if (!tenant.ok()) return Fail(tenant.status());
    std::fprintf(stderr, "revoked key %s of tenant %s\n", pos[1].c_str(), tenant->c_str());
    return std::nullopt;
  }
  return Failure{2, absl::StrCat("key: unknown command \"", verb, "\"")};
}

}  // namespace

int RunAdminCommand(const std::string& command, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env) {
  std::vector<std::string> known = kQuotaFlags;
  if (command == "key") known = {"scopes", "topics", "description"};
  Parsed parsed;
  std::optional<Failure> failure = Parse(args, known, &parsed);
  if (!failure) {
    auto url = env.find("PGBUS_DATABASE_URL");
    if (url == env.end() || url->second.empty()) {
      failure = Failure{2, "set PGBUS_DATABASE_URL to the schema owner's connection string"};
    } else {
      auto admin = store::postgres::TenantAdmin::Connect(url->second);
      if (!admin.ok()) {
        failure = Fail(admin.status());
      } else {
        failure = command == "tenant" ? Tenant(**admin, parsed) : Key(**admin, parsed);
      }
    }
  }
  if (!failure) return 0;
  std::fprintf(stderr, "pgbusd %s: %s\n", command.c_str(), failure->message.c_str());
  if (failure->code == 2) std::fputs(kAdminUsage, stderr);
  return failure->code;
}

}  // namespace pgbus
