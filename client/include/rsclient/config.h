// The client node's configuration: its identity (node name and key) and the RSIO servers it
// knows, each with one or more addresses (one per path). Kept as JSON in
// /etc/rsio/rsclient.json (mode 0600: it holds the node key); rsclientd is its only writer
// and rsconfig changes it through rsclientd's API.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace rsio::rsclient {

struct ServerConfig {
  std::string name;         // e.g. "trainator"
  int namespace_index = 0;  // the /dev/av<N> directory
  std::string namespace_name = "rsio";
  std::vector<std::string> paths;  // HOST:PORT[@LOCAL_ADDRESS]
};

struct Config {
  std::string node_name;
  std::string node_key;
  std::vector<ServerConfig> servers;

  const ServerConfig* find_server(const std::string& name) const;
};

// A missing file is an empty configuration. Errors: kCorrupt (unreadable JSON), kIo.
Result<Config> load_config(const std::string& path);
// Writes atomically (temporary file, fsync, rename) with mode 0600.
Status save_config(const std::string& path, const Config& c);
// Checks names, keys and addresses. Errors: kInvalidArgument.
Status validate_config(const Config& c);

}  // namespace rsio::rsclient
