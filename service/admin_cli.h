// `pgbusd tenant ...` and `pgbusd key ...`: the operator's commands, run
// with the schema owner's connection string in PGBUS_DATABASE_URL (as
// `pgbusd migrate`). Usage: kAdminUsage.
#ifndef PGBUS_SERVICE_ADMIN_CLI_H_
#define PGBUS_SERVICE_ADMIN_CLI_H_

#include <map>
#include <string>
#include <vector>

namespace pgbus {

extern const char kAdminUsage[];

// `command` is "tenant" or "key"; `args` follow it. Returns the exit code:
// 0 done, 1 failed (the reason on stderr), 2 bad usage.
int RunAdminCommand(const std::string& command, const std::vector<std::string>& args,
                    const std::map<std::string, std::string>& env);

}  // namespace pgbus

#endif  // PGBUS_SERVICE_ADMIN_CLI_H_
