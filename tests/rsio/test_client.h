// Helpers for tests that talk RSIO to a real rsiod: a free loopback port and synchronous
// I/O through the client library.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "rsio/client.h"

namespace rsio::test {

// A free TCP port on loopback (bound and released; rsiod binds it with SO_REUSEADDR).
inline uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Where a test waits for one request's completion.
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  wire::StatusCode status = wire::StatusCode::kOk;
};

// Synchronous I/O through the client library.
inline wire::StatusCode io_sync(client::Client& c, uint32_t vol, wire::Opcode o, uint64_t offset,
                                uint32_t length, void* buf, bool fua = false) {
  Waiter w;
  client::Io io;
  io.op = o;
  io.fua = fua;
  io.volume = vol;
  io.offset = offset;
  io.length = length;
  io.buf = buf;
  io.user = &w;
  io.done = [](client::Io* i, wire::StatusCode s) {
    auto* wt = static_cast<Waiter*>(i->user);
    std::lock_guard lock(wt->mu);
    wt->status = s;
    wt->done = true;
    wt->cv.notify_one();
  };
  c.submit(&io);
  std::unique_lock lock(w.mu);
  w.cv.wait(lock, [&] { return w.done; });
  return w.status;
}

}  // namespace rsio::test
