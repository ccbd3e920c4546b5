// Thread model: the fio job thread calls every rsio_fio_* function. In caller-driven mode it
// also drives the client library, so completions run on it; otherwise they arrive on the
// library's thread and are handed over through `mu`.
#include "bridge.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <vector>

#include "rsio/client.h"

using rsio::wire::Opcode;
using rsio::wire::StatusCode;

namespace {

// One fio request: the library's Io plus what fio needs back.
struct Req {
  rsio::client::Io io;  // first member: the completion finds the Req from the Io
  void* cookie = nullptr;
  int error = 0;
};

}  // namespace

struct rsio_fio {
  std::unique_ptr<rsio::client::Client> client;
  uint32_t volume = 0;
  std::vector<rsio::client::Io*> queued;  // waiting for commit
  std::vector<Req*> free_reqs;
  bool caller_driven = false;
  std::mutex mu;  // threaded mode: completions come from the library's thread
  std::condition_variable cv;
  std::vector<Req*> completed;  // GUARDED_BY(mu) in threaded mode
  size_t wake_at = 0;           // GUARDED_BY(mu): the waiter wants this many
  std::vector<Req*> events;     // handed to fio by the last getevents
  std::vector<std::unique_ptr<Req>> all;
};

namespace {

// Runs inside poll() on the fio thread (caller-driven), or on the library's thread.
void on_done(rsio::client::Io* io, StatusCode s) {
  auto* r = reinterpret_cast<Req*>(io);
  auto* h = static_cast<rsio_fio*>(io->user);
  r->error = rsio::wire::status_errno(s);
  if (h->caller_driven) {
    h->completed.push_back(r);
    return;
  }
  std::lock_guard lock(h->mu);
  h->completed.push_back(r);
  if (h->wake_at > 0 && h->completed.size() >= h->wake_at) h->cv.notify_one();
}

}  // namespace

extern "C" rsio_fio* rsio_fio_open(const char* servers, const char* node, const char* keyfile,
                                   const char* volume, int read_only, int caller_driven,
                                   uint64_t* size_bytes, char* err, size_t errlen) {
  auto fail = [&](const std::string& m) -> rsio_fio* {
    std::snprintf(err, errlen, "%s", m.c_str());
    return nullptr;
  };
  if (servers == nullptr || node == nullptr || keyfile == nullptr || volume == nullptr)
    return fail("the rsio engine needs server=, node=, keyfile= and volume=");
  rsio::client::ClientOptions o;
  o.node_name = node;
  o.caller_driven = caller_driven != 0;
  std::ifstream kf(keyfile);
  if (!kf || !std::getline(kf, o.node_key) || o.node_key.empty())
    return fail(fmt::format("cannot read the node key from {}", keyfile));
  std::string list = servers;
  for (size_t pos = 0; pos <= list.size();) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    if (comma > pos) {
      auto p = rsio::client::parse_path(list.substr(pos, comma - pos));
      if (!p) return fail(p.error().message);
      o.paths.push_back(*p);
    }
    pos = comma + 1;
  }
  auto c = rsio::client::Client::connect(o);
  if (!c) return fail(c.error().message);
  auto v = (*c)->open(volume, read_only != 0);
  if (!v) return fail(v.error().message);
  auto* h = new rsio_fio();
  h->caller_driven = caller_driven != 0;
  h->client = std::move(*c);
  h->volume = v->id;
  *size_bytes = v->size_bytes;
  return h;
}

extern "C" void rsio_fio_queue(rsio_fio* h, void* cookie, enum rsio_fio_op op, void* buf,
                               uint64_t len, uint64_t offset) {
  Req* r = nullptr;
  if (!h->free_reqs.empty()) {
    r = h->free_reqs.back();
    h->free_reqs.pop_back();
  } else {
    h->all.push_back(std::make_unique<Req>());
    r = h->all.back().get();
  }
  r->io = rsio::client::Io{};
  r->io.op = op == RSIO_FIO_READ    ? Opcode::kRead
             : op == RSIO_FIO_WRITE ? Opcode::kWrite
             : op == RSIO_FIO_TRIM  ? Opcode::kDiscard
                                    : Opcode::kFlush;
  r->io.volume = h->volume;
  r->io.offset = op == RSIO_FIO_SYNC ? 0 : offset;
  r->io.length = op == RSIO_FIO_SYNC ? 0 : static_cast<uint32_t>(len);
  r->io.buf = buf;
  r->io.done = &on_done;
  r->io.user = h;
  r->cookie = cookie;
  r->error = 0;
  h->queued.push_back(&r->io);
}

extern "C" void rsio_fio_commit(rsio_fio* h) {
  if (h->queued.empty()) return;
  h->client->submit(h->queued.data(), h->queued.size());
  h->queued.clear();
}

extern "C" int rsio_fio_getevents(rsio_fio* h, unsigned min, unsigned max,
                                  const struct timespec* t) {
  for (Req* r : h->events) h->free_reqs.push_back(r);
  h->events.clear();
  const auto until = t == nullptr
                         ? std::chrono::steady_clock::time_point::max()
                         : std::chrono::steady_clock::now() + std::chrono::seconds(t->tv_sec) +
                               std::chrono::nanoseconds(t->tv_nsec);
  std::unique_lock lock(h->mu, std::defer_lock);
  if (h->caller_driven) {
    // Completions are collected by poll() on this thread.
    h->client->poll(0);
    while (h->completed.size() < min) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) break;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
      h->client->poll(static_cast<int>(std::clamp<long long>(left, 1, 1000)));
    }
  } else {
    lock.lock();
    if (h->completed.size() < min) {
      h->wake_at = min;
      auto ready = [&] { return h->completed.size() >= min; };
      if (t == nullptr)
        h->cv.wait(lock, ready);
      else
        h->cv.wait_until(lock, until, ready);
      h->wake_at = 0;
    }
  }
  const size_t n = std::min<size_t>(h->completed.size(), max);
  h->events.assign(h->completed.begin(), h->completed.begin() + static_cast<long>(n));
  h->completed.erase(h->completed.begin(), h->completed.begin() + static_cast<long>(n));
  return static_cast<int>(n);
}

extern "C" void* rsio_fio_event(rsio_fio* h, int i, int* error) {
  Req* r = h->events[static_cast<size_t>(i)];
  *error = r->error;
  return r->cookie;
}

extern "C" void rsio_fio_close(rsio_fio* h) { delete h; }
