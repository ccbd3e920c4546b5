#include "rsclient/config.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/names.h"
#include "rsio/client.h"

namespace rsio::rsclient {

using nlohmann::json;

const ServerConfig* Config::find_server(const std::string& name) const {
  for (const auto& s : servers)
    if (s.name == name) return &s;
  return nullptr;
}

Result<Config> load_config(const std::string& path) {
  Config c;
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return c;
    return errno_error(fmt::format("read {}", path), errno);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return make_error(Errc::kCorrupt, fmt::format("{} is not valid JSON; fix or remove it", path));
  try {
    c.node_name = j.value("node", std::string());
    c.node_key = j.value("key", std::string());
    for (const auto& s : j.value("servers", json::array())) {
      ServerConfig sc;
      sc.name = s.at("name").get<std::string>();
      sc.namespace_index = s.value("namespace", 0);
      sc.namespace_name = s.value("namespace_name", std::string("rsio"));
      sc.paths = s.value("paths", std::vector<std::string>{});
      c.servers.push_back(std::move(sc));
    }
  } catch (const json::exception& e) {
    return make_error(Errc::kCorrupt, fmt::format("{}: {}", path, e.what()));
  }
  return c;
}

Status save_config(const std::string& path, const Config& c) {
  json servers = json::array();
  for (const auto& s : c.servers)
    servers.push_back({{"name", s.name},
                       {"namespace", s.namespace_index},
                       {"namespace_name", s.namespace_name},
                       {"paths", s.paths}});
  const std::string text =
      json{{"node", c.node_name}, {"key", c.node_key}, {"servers", servers}}.dump(2) + "\n";
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error(fmt::format("write {}", tmp), errno);
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) return errno_error(fmt::format("write {}", tmp), err);
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    return errno_error(fmt::format("rename {}", path), errno);
  return {};
}

Status validate_config(const Config& c) {
  if (!c.node_name.empty()) RSIO_TRY_STATUS(validate_name(c.node_name, "node name"));
  if (c.node_key.size() > 64)
    return make_error(Errc::kInvalidArgument, "the node key has more than 64 characters");
  for (const auto& s : c.servers) {
    RSIO_TRY_STATUS(validate_name(s.name, "server name"));
    if (s.namespace_index < 0 || s.namespace_index > 999)
      return make_error(Errc::kInvalidArgument, "namespace index must be 0..999");
    for (const auto& p : s.paths)
      if (auto parsed = client::parse_path(p); !parsed) return parsed.error();
  }
  return {};
}

}  // namespace rsio::rsclient
