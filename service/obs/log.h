// Structured logs: one logfmt line per notable event on stderr, e.g.
//   ts=2026-11-23T10:00:00.123Z level=info event=listening addr=127.0.0.1:50051
// Never pass secrets, DSNs or payload bytes as fields.
//
// Thread safety: safe from any thread; lines never interleave.
#ifndef PGBUS_SERVICE_OBS_LOG_H_
#define PGBUS_SERVICE_OBS_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace pgbus::obs {

enum class Level { kDebug, kInfo, kWarning, kError };

using Field = std::pair<absl::string_view, std::string>;

void Log(Level level, absl::string_view event, std::initializer_list<Field> fields = {});

inline void Info(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Log(Level::kInfo, event, fields);
}
inline void Warn(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Log(Level::kWarning, event, fields);
}
inline void Error(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Log(Level::kError, event, fields);
}

}  // namespace pgbus::obs

#endif  // PGBUS_SERVICE_OBS_LOG_H_
