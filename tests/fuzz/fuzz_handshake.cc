// Fuzz target: the server's pre-authentication path. Each input is sent as the byte stream of
// one new connection to a real ExportServer (over a socketpair), then the sending side is
// shut down; the server must answer or close without crashing, leaking or opening anything.
// The node "tux" exists (key "tuxkey"), so a HELLO for it reaches the AUTH stage.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "rsio/server.h"

namespace {

using namespace rsio;

struct Backend : server::ExportBackend {
  block::Loop* loop = nullptr;
  void lookup_node(const std::string& name,
                   std::function<void(std::optional<server::NodeInfo>)> done) override {
    std::optional<server::NodeInfo> n;
    if (name == "tux") n = server::NodeInfo{1, "tuxkey"};
    loop->defer([done, n] { done(n); });
  }
  void list_volumes(int64_t, std::function<void(std::vector<wire::VolumeEntry>)> done) override {
    loop->defer([done] { done({}); });
  }
  void check_open(int64_t, const std::string&, bool,
                  std::function<void(server::OpenAnswer)> done) override {
    loop->defer([done] { done(server::OpenAnswer{wire::StatusCode::kNotFound, 0, "", false}); });
  }
  block::BlockTarget* target(int64_t) override { return nullptr; }
};

struct Fixture {
  std::unique_ptr<block::Loop> loop;
  Backend backend;
  std::unique_ptr<server::ExportServer> srv;
  Fixture() {
    loop = std::move(*block::Loop::create(256));
    backend.loop = loop.get();
    server::ServerOptions o;
    o.listen.push_back({"127.0.0.1", 0});
    o.handshake_deadline_ms = 50;  // deadline timers fire during later inputs
    srv = std::move(*server::ExportServer::start(*loop, backend, o));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture f;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return 0;
  f.srv->adopt(sv[0]);
  size_t off = 0;
  bool closed = false;
  uint8_t buf[4096];
  // Feed the input while draining replies, then wait for the server to close or go quiet.
  for (int spins = 0; spins < 20000 && !closed; ++spins) {
    if (off < size) {
      const ssize_t n = ::send(sv[1], data + off, size - off, MSG_NOSIGNAL);
      if (n > 0) off += static_cast<size_t>(n);
      if (off == size) ::shutdown(sv[1], SHUT_WR);
    } else if (size == 0 && spins == 0) {
      ::shutdown(sv[1], SHUT_WR);
    }
    f.loop->run_once(false);
    const ssize_t r = ::recv(sv[1], buf, sizeof(buf), 0);
    if (r == 0) closed = true;
  }
  ::close(sv[1]);
  // Let the server notice and free the connection.
  for (int i = 0; i < 100; ++i) f.loop->run_once(false);
  return 0;
}
