// When a streaming reactor may call Finish(): exactly once, and never while
// its start-up (authentication, attaching the stream, on the worker pool)
// or a write is in flight, because gRPC may run OnDone() -- which deletes
// the reactor -- as soon as Finish() is called, and the code still running
// for the start-up or the write would then touch freed memory. A status
// that arrives meanwhile is kept and handed back when the last of them
// completes. Pure state, no gRPC: tests/unit/finish_gate_test.cc walks
// every order of events.
//
// Thread safety: none; the reactor calls it under its own lock, and calls
// Finish() with what it returns only after releasing that lock.
#ifndef PGBUS_SERVICE_API_FINISH_GATE_H_
#define PGBUS_SERVICE_API_FINISH_GATE_H_

#include <optional>
#include <utility>

namespace pgbus::api {

template <typename Status>
class FinishGate {
 public:
  // The start-up is in flight from construction.
  FinishGate() = default;

  // A write may start: false once the stream is ending. While it is in
  // flight, no status is handed back.
  bool StartWrite() {
    if (finished_) return false;
    writing_ = true;
    return true;
  }

  // The stream is to end with `status`. Returns it when Finish() may be
  // called now; nothing when the start-up or a write will hand it back, or
  // when the stream is already ending (the first status wins).
  std::optional<Status> End(Status status) {
    if (finished_) return std::nullopt;
    finished_ = true;
    pending_ = std::move(status);
    return TakeIfIdle();
  }

  // The write completed: the status to finish with now, if the stream
  // ended meanwhile.
  std::optional<Status> WriteDone() {
    writing_ = false;
    return TakeIfIdle();
  }

  // The start-up completed, with `failure` when it failed (which ends the
  // stream unless it already was): the status to finish with now, if any.
  std::optional<Status> Started(std::optional<Status> failure) {
    starting_ = false;
    if (failure && !finished_) {
      finished_ = true;
      pending_ = std::move(failure);
    }
    return TakeIfIdle();
  }

  // The stream is ending (a status was given), whether or not it was handed
  // back yet.
  bool finished() const { return finished_; }

 private:
  std::optional<Status> TakeIfIdle() {
    if (!finished_ || writing_ || starting_ || !pending_) return std::nullopt;
    std::optional<Status> out = std::move(pending_);
    pending_.reset();
    return out;
  }

  bool starting_ = true;
  bool writing_ = false;
  bool finished_ = false;
  std::optional<Status> pending_;  // the status not yet handed back
};

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_FINISH_GATE_H_
