// Thread model: see loop.h. Only post() and stop() touch posted_ from other threads.
#include "block/loop.h"

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include "common/assert.h"

namespace rsio::block {

Result<std::unique_ptr<Loop>> Loop::create(unsigned queue_depth) {
  std::unique_ptr<Loop> loop(new Loop());
  // Completions are only ever reaped by the loop thread, so the kernel need not interrupt it
  // for each one: defer completion work until the loop enters the kernel (6.1+), or at
  // least do it cooperatively (5.19+), falling back to the default.
  int rc = -EINVAL;
  for (unsigned flags :
       {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_COOP_TASKRUN, 0u}) {
    rc = io_uring_queue_init(queue_depth, &loop->ring_, flags);
    if (rc == 0) break;
  }
  if (rc < 0)
    return make_error(Errc::kUnavailable,
                      fmt::format("io_uring_queue_init failed: {}; the I/O engine needs a kernel "
                                  "with io_uring enabled (kernel.io_uring_disabled=0) and enough "
                                  "locked memory (ulimit -l)",
                                  std::strerror(-rc)));
  loop->ring_ready_ = true;
  loop->event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (loop->event_fd_ < 0) return errno_error("eventfd", errno);
  loop->wakeup_.fn = [](Completion*, int) {};  // replaced below with access to the loop
  return loop;
}

Loop::~Loop() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

io_uring_sqe* Loop::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (s == nullptr) {
    io_uring_submit(&ring_);
    unsubmitted_ = 0;
    s = io_uring_get_sqe(&ring_);
    RSIO_ASSERT_MSG(s != nullptr, "io_uring submission queue still full after submit");
  }
  ++in_flight_;
  ++unsubmitted_;
  return s;
}

void Loop::defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  has_posted_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  ssize_t n = ::write(event_fd_, &one, sizeof(one));
  (void)n;  // EAGAIN means the counter is already non-zero: the loop will wake anyway
}

// A pending after(): owned by the loop's timer list until it fires or the loop goes away.
struct Loop::Timer {
  Completion completion;
  __kernel_timespec ts{};
  std::function<void()> fn;
  Loop* loop = nullptr;
};

void Loop::after(uint64_t delay_ns, std::function<void()> fn) {
  auto owned = std::make_unique<Timer>();
  Timer* t = owned.get();
  t->ts.tv_sec = static_cast<long long>(delay_ns / 1'000'000'000ULL);
  t->ts.tv_nsec = static_cast<long long>(delay_ns % 1'000'000'000ULL);
  t->fn = std::move(fn);
  t->loop = this;
  t->completion.fn = [](Completion* c, int) {
    auto* timer = reinterpret_cast<Timer*>(c);
    Loop* loop = timer->loop;
    auto it = loop->timers_.find(timer);
    RSIO_ASSERT(it != loop->timers_.end());
    std::unique_ptr<Timer> mine = std::move(it->second);
    loop->timers_.erase(it);
    auto f = std::move(mine->fn);
    mine.reset();
    f();
  };
  timers_.emplace(t, std::move(owned));
  io_uring_sqe* s = sqe();
  io_uring_prep_timeout(s, &t->ts, 0, 0);
  io_uring_sqe_set_data(s, &t->completion);
}

void Loop::stop() {
  post([this] { stopping_ = true; });
}

void Loop::arm_wakeup() {
  if (wakeup_armed_) return;
  // The wakeup SQE is not counted in in_flight_: it is always there.
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (s == nullptr) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  io_uring_prep_read(s, event_fd_, &event_buf_, sizeof(event_buf_), 0);
  io_uring_sqe_set_data(s, &wakeup_);
  ++unsubmitted_;
  wakeup_armed_ = true;
}

size_t Loop::drain_posted() {
  if (!has_posted_.load(std::memory_order_acquire)) return 0;
  has_posted_.store(false, std::memory_order_relaxed);
  std::vector<std::function<void()>> work;
  {
    std::lock_guard lock(posted_mu_);
    work.swap(posted_);
  }
  for (auto& fn : work) fn();
  return work.size();
}

size_t Loop::run_once(bool block) { return run_once(block, false); }

size_t Loop::run_once(bool block, bool wait_after_deferred) {
  // Posted work counts as handled: it may have changed what the caller waits for (stop()).
  size_t handled = drain_posted();
  const size_t posted = handled;
  // Deferred work may defer more; run only what is there now so completions get a turn.
  for (size_t n = deferred_.size(); n > 0 && !deferred_.empty(); --n) {
    auto fn = std::move(deferred_.front());
    deferred_.pop_front();
    fn();
    ++handled;
  }
  arm_wakeup();
  // Deferred work usually just queued SQEs (a reply to send): run() submits them and waits in
  // one system call. run_until() callers may wait for what deferred work changed, so they
  // look again first.
  bool wait = block && deferred_.empty() &&
              (wait_after_deferred ? posted == 0 && !stopping_ : handled == 0);
  const bool skip_poll = skip_poll_;
  skip_poll_ = false;
  if (wait && poll_ns_ > 0 && !skip_poll) {
    // Busy-poll a little before sleeping: a request that follows soon (a client at queue
    // depth 1) is picked up without the cost of a sleep and wake-up. With DEFER_TASKRUN
    // completions are only posted when the ring is entered, hence io_uring_get_events().
    if (unsubmitted_ > 0) {
      io_uring_submit(&ring_);
      unsubmitted_ = 0;
    }
    timespec t0{};
    ::clock_gettime(CLOCK_MONOTONIC, &t0);
    const uint64_t start = static_cast<uint64_t>(t0.tv_sec) * 1'000'000'000ULL + t0.tv_nsec;
    for (;;) {
      io_uring_get_events(&ring_);
      if (io_uring_cq_ready(&ring_) > 0 || has_posted_.load(std::memory_order_acquire)) {
        wait = false;
        break;
      }
      timespec t{};
      ::clock_gettime(CLOCK_MONOTONIC, &t);
      if (static_cast<uint64_t>(t.tv_sec) * 1'000'000'000ULL + t.tv_nsec - start >= poll_ns_) break;
    }
  }
  if (wait) {
    io_uring_submit_and_wait(&ring_, 1);
  } else if (unsubmitted_ > 0) {
    io_uring_submit(&ring_);
  }
  unsubmitted_ = 0;
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0;
  unsigned seen = 0;
  // Collect first, then advance, then call: callbacks may queue new SQEs.
  reaped_.clear();
  io_uring_for_each_cqe(&ring_, head, cqe) {
    reaped_.emplace_back(static_cast<Completion*>(io_uring_cqe_get_data(cqe)), cqe->res);
    ++seen;
  }
  io_uring_cq_advance(&ring_, seen);
  for (auto [c, res] : reaped_) {
    if (c == &wakeup_) {
      wakeup_armed_ = false;
      continue;
    }
    --in_flight_;
    c->fn(c, res);
    ++handled;
  }
  return handled;
}

void Loop::run() {
  while (!stopping_) run_once(true, true);
  stopping_ = false;
}

void Loop::run_until(const std::function<bool()>& done) {
  while (!done()) run_once(true);
}

}  // namespace rsio::block
