// Running the real binaries from tests: commands with captured output, and an rsiod daemon
// with its own state directory and socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace rsio::test {

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
};

struct RunOptions {
  std::vector<std::string> env;  // extra NAME=VALUE entries
  std::optional<uid_t> uid;      // run as this user (needs root)
  std::chrono::milliseconds timeout{30000};
};

// Runs argv[0] (a path) with arguments, waits for it, captures stdout and stderr.
CommandResult run(const std::vector<std::string>& argv, const RunOptions& opt = {});

// Splits a command line on spaces (no quoting).
std::vector<std::string> split_words(const std::string& line);

class Daemon {
 public:
  Daemon(std::string rsiod_path, std::string state_dir, std::string socket_path)
      : rsiod_(std::move(rsiod_path)),
        state_dir_(std::move(state_dir)),
        socket_(std::move(socket_path)) {}
  ~Daemon() { stop(); }

  // Starts rsiod with the given extra arguments and waits (up to 20 s) until its socket
  // accepts connections. Returns false, with the log in `log()`, if it exited instead.
  bool start(const std::vector<std::string>& extra = {});
  // SIGTERM and wait; returns the exit code.
  int stop();
  // SIGKILL and wait, as a crash would end it.
  void kill9();
  pid_t pid() const { return pid_; }
  // The RSIO port rsiod reported in its ready line (0 when none).
  uint16_t rsio_port() const;
  bool running() const { return pid_ > 0; }
  std::string log() const;
  const std::string& socket() const { return socket_; }

 private:
  std::string rsiod_, state_dir_, socket_;
  pid_t pid_ = -1;
};

#ifdef RSIO_BIN_DIR
// The programs under test, in the build tree.
inline const std::string kBin = RSIO_BIN_DIR;
inline const std::string kRsiod = kBin + "/appliance/rsiod";
inline const std::string kSmgr = kBin + "/cli/smgr";
inline const std::string kRsadmin = kBin + "/cli/rsadmin";
#endif

// True when a connection to the Unix socket at `path` succeeds.
bool socket_answers(const std::string& path);

}  // namespace rsio::test
