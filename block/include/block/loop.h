// The event loop of the data path: one io_uring plus queues of deferred work. The I/O engine
// drives its devices on it, and the export server its sockets next to them.
//
// Thread model: a Loop belongs to one thread, its loop thread, which creates it and calls
// run_once() or run() (the kernel binds the ring to the thread that creates it). Everything the
// loop drives (device completions, deferred tasks, volume state) runs on that thread and must not
// block. post() is the only member other threads may call; it wakes the loop through an eventfd
// that the ring watches.
#pragma once

#include <liburing.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/result.h"

namespace rsio::block {

// Completion of one SQE: the loop calls `fn(this, cqe->res)` on the loop thread.
struct Completion {
  void (*fn)(Completion* self, int result) = nullptr;
};

class Loop {
 public:
  // Errors: kUnavailable when io_uring cannot be set up (kernel without io_uring, seccomp,
  // RLIMIT_MEMLOCK), with what to check.
  static Result<std::unique_ptr<Loop>> create(unsigned queue_depth = 256);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // An SQE to fill; its user data must be a Completion*. When the submission queue is full
  // the pending SQEs are submitted first. Loop thread only.
  io_uring_sqe* sqe();

  // Runs `fn` on the loop thread after the current work. Loop thread only; cheap.
  void defer(std::function<void()> fn);
  // Runs `fn` on the loop thread. Any thread.
  void post(std::function<void()> fn);
  // Runs `fn` on the loop thread after `delay_ns` nanoseconds. Loop thread only.
  void after(uint64_t delay_ns, std::function<void()> fn);

  // Submits pending SQEs, runs deferred work, reaps completions. With `block`, waits until
  // at least one event arrives when there is nothing else to do. Returns the number of
  // events handled.
  size_t run_once(bool block);
  // Runs until stop(). Loop thread only.
  void run();
  // Makes run() return. Any thread.
  void stop();

  // Runs the loop until `done()` is true. For tests and tools that drive the loop from the
  // thread that submits.
  void run_until(const std::function<bool()>& done);

  size_t sqes_in_flight() const { return in_flight_; }

  // Before sleeping, run() busy-polls the ring for up to `ns` nanoseconds (0: never). Costs
  // CPU while idle; saves a sleep and wake-up per request at low queue depth. Loop thread.
  void set_poll_ns(uint64_t ns) { poll_ns_ = ns; }
  // Skips the busy-poll before the next sleep: work that just started will take long (a
  // large transfer), so polling would only burn CPU the peer needs. Loop thread.
  void skip_poll_once() { skip_poll_ = true; }

 private:
  Loop() = default;
  size_t run_once(bool block, bool wait_after_deferred);
  void arm_wakeup();
  size_t drain_posted();

  io_uring ring_{};
  bool ring_ready_ = false;
  int event_fd_ = -1;
  uint64_t event_buf_ = 0;
  Completion wakeup_;
  bool wakeup_armed_ = false;
  size_t in_flight_ = 0;
  size_t unsubmitted_ = 0;
  bool stopping_ = false;
  uint64_t poll_ns_ = 0;
  bool skip_poll_ = false;
  std::deque<std::function<void()>> deferred_;
  std::vector<std::pair<Completion*, int>> reaped_;
  struct Timer;
  // Timers in the ring, owned here until they fire; ~Loop() exits the ring before they go.
  std::unordered_map<Timer*, std::unique_ptr<Timer>> timers_;
  std::atomic<bool> has_posted_{false};  // a cheap check before taking posted_mu_
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;  // GUARDED_BY(posted_mu_)
};

}  // namespace rsio::block
