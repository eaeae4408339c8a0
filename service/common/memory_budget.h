// A budget of bytes shared by every call in flight (max_call_memory_mb):
// a call reserves what it will hold before it holds more, and is refused
// when the budget is spent, so that memory is bounded and overload sheds
// calls instead of growing the process.
//
// Thread safety: every method may be called from any thread.
#ifndef PGBUS_SERVICE_COMMON_MEMORY_BUDGET_H_
#define PGBUS_SERVICE_COMMON_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <memory>

namespace pgbus {

class MemoryBudget {
 public:
  explicit MemoryBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  // Bytes held until it is destroyed.
  class Reservation {
   public:
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { budget_->used_.fetch_sub(bytes_); }

   private:
    friend class MemoryBudget;
    Reservation(MemoryBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    MemoryBudget* const budget_;
    const int64_t bytes_;
  };

  // Null when `bytes` more would pass the limit. A shared_ptr so that it
  // can ride along in copyable callbacks.
  std::shared_ptr<Reservation> TryReserve(int64_t bytes) {
    int64_t used = used_.load();
    do {
      if (used + bytes > limit_) return nullptr;
    } while (!used_.compare_exchange_weak(used, used + bytes));
    return std::shared_ptr<Reservation>(new Reservation(this, bytes));
  }

  int64_t limit() const { return limit_; }
  int64_t used() const { return used_.load(); }

 private:
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
};

}  // namespace pgbus

#endif  // PGBUS_SERVICE_COMMON_MEMORY_BUDGET_H_
