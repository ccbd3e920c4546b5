// rsconfig: the client node's administration CLI. Thin: parses the command line, calls
// rsclientd's API, prints in the seed's layout.
#include <fmt/format.h>

#include <map>
#include <string>
#include <vector>

#include "cli/api_client.h"

using nlohmann::json;
using namespace rsio;
using namespace rsio::cli;

namespace {

constexpr const char* kDefaultClientSocket = "/run/rsio/rsclientd.sock";

struct Args {
  bool query = false;
  int verbose = 0;
  bool attach = false;
  bool list = false;
  std::string detach;
  bool force = false;
  bool read_only = false;
  std::vector<std::string> volumes;  // with -a: only these
  std::string server;                // with -a: only from this server
  std::string set_node, key;
  std::string add_server, remove_server;
  std::vector<std::string> addresses;
  std::vector<std::string> add_address, remove_address;  // SERVER ADDRESS
  int namespace_index = 0;
  bool namespace_given = false;
  bool show_config = false;
  bool json_out = false;
  std::string socket = kDefaultClientSocket;
};

void print_json(const json& j) { fmt::print("{}\n", j.dump(2)); }

Status query(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/volumes"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  for (const auto& ns : r["namespaces"]) {
    fmt::print("{:03} {}{}\n", ns["index"].get<int>(), ns["name"].get<std::string>(),
               a.verbose >= 2 ? ", mode: " + r["mode"].get<std::string>() : "");
    fmt::print("    clt: {}\n", r["node"].get<std::string>());
    int index = 0;
    for (const auto& s : ns["servers"]) {
      fmt::print("    srv: {:03} {}\n", index++, s["name"].get<std::string>());
      if (s.contains("error")) {
        fmt::print("         ({})\n", s["error"].get<std::string>());
        continue;
      }
      for (const auto& v : s["volumes"]) {
        fmt::print("{}\n", rstrip(fmt::format(
                               "         {}  {:<16}{:<4}{:>16} blocks, blocksize {:>4} bytes{}",
                               ns["index"].get<int>(), v["name"].get<std::string>(), "disk",
                               v["blocks"].get<uint64_t>(), v["block_size"].get<uint32_t>(),
                               v["read_only"].get<bool>() ? " (read-only)" : "")));
        if (a.verbose >= 2) {
          fmt::print("            c: {}\n", v["raw_device"].get<std::string>());
          fmt::print("            b: {}\n", v["block_device"].get<std::string>());
        }
      }
    }
  }
  return {};
}

Status list_devices(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/devices"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  for (const auto& d : r["devices"]) {
    const std::string id =
        fmt::format("rsio::{}@{}", d["volume"].get<std::string>(), d["namespace_index"].get<int>());
    // A device that cannot follow a resize on the server says so on its first line.
    const bool fixed = !d.value("follows_resize", true);
    fmt::print("{}\n", rstrip(fmt::format("{:<40}{:>13} blocks, {:>3} server(s){}{}", id,
                                          d["blocks"].get<uint64_t>(), d["servers"].get<int>(),
                                          d["read_only"].get<bool>() ? ", read-only" : "",
                                          fixed ? ", size fixed until re-attached" : "")));
    if (a.verbose >= 2) {
      fmt::print("    c: {}\n",
                 d["raw_device"].is_null() ? "-" : d["raw_device"].get<std::string>());
      fmt::print("    b: {}\n", d["block_device"].get<std::string>());
    }
    if (a.verbose >= 3) {
      fmt::print("    via {} ({} frontend), server {}\n", d["loop_device"].get<std::string>(),
                 d["frontend"].get<std::string>(), d["server"].get<std::string>());
      if (fixed)
        fmt::print(
            "    a resize on the server shows after detach and attach (this kernel's "
            "ublk cannot resize a live device)\n");
    }
  }
  return {};
}

Status attach(ApiClient& api, const Args& a) {
  std::vector<std::pair<std::string, std::string>> todo;  // (volume, server)
  Status first_error;
  if (!a.volumes.empty()) {
    for (const auto& v : a.volumes) todo.emplace_back(v, a.server);
  } else {
    // Every granted volume that is not attached yet.
    RSIO_TRY(json r, api.call("GET", "/1.0/volumes"));
    for (const auto& ns : r["namespaces"])
      for (const auto& s : ns["servers"]) {
        if (!a.server.empty() && s["name"] != a.server) continue;
        if (s.contains("error")) {
          fmt::print(stderr, "rsconfig: server {}: {}\n", s["name"].get<std::string>(),
                     s["error"].get<std::string>());
          // Its volumes are not attached: say so in the exit code too.
          if (first_error) first_error = make_error(Errc::kUnavailable, "server unreachable");
          continue;
        }
        for (const auto& v : s["volumes"])
          if (!v["attached"].get<bool>())
            todo.emplace_back(v["name"].get<std::string>(), s["name"].get<std::string>());
      }
  }
  for (const auto& [vol, srv] : todo) {
    json body{{"volume", vol}, {"read_only", a.read_only}};
    if (!srv.empty()) body["server"] = srv;
    auto r = api.call("POST", "/1.0/devices", body);
    if (!r) {
      fmt::print(stderr, "rsconfig: {}: {}\n", vol, r.error().message);
      if (first_error) first_error = r.error();
      continue;
    }
    if (a.json_out) print_json(*r);
    if (a.verbose > 0)
      fmt::print("{} attached as {}\n", vol, (*r)["block_device"].get<std::string>());
  }
  if (!first_error)
    return make_error(first_error.error().code, "not every volume could be attached");
  return {};
}

Status run(ApiClient& api, const Args& a) {
  const int actions = int{a.query} + int{a.attach} + int{a.list} + int{!a.detach.empty()} +
                      int{!a.set_node.empty() || !a.key.empty()} + int{!a.add_server.empty()} +
                      int{!a.remove_server.empty()} + int{!a.add_address.empty()} +
                      int{!a.remove_address.empty()} + int{a.show_config};
  if (actions == 0)
    throw UsageError("say what to do: -q, -qvv, -a, -l, -lvv, -d or a config option");
  if (actions > 1) throw UsageError("give one action at a time");
  if (!a.addresses.empty() && a.add_server.empty())
    throw UsageError("--address belongs to --add-server");
  if (a.namespace_given && a.add_server.empty())
    throw UsageError("--namespace belongs to --add-server");
  if (!a.attach && (!a.volumes.empty() || !a.server.empty() || a.read_only))
    throw UsageError(a.volumes.empty()
                         ? "--server and --read-only belong to -a"
                         : fmt::format("a volume name ('{}') goes with -a (to attach it) or -d "
                                       "(to detach it)",
                                       a.volumes.front()));
  if (a.force && a.detach.empty()) throw UsageError("-f/--force belongs to -d");
  if (a.verbose > 0 && !a.query && !a.list) throw UsageError("-v/--verbose belongs to -q or -l");
  if (a.query) return query(api, a);
  if (a.list) return list_devices(api, a);
  if (a.attach) return attach(api, a);
  if (!a.detach.empty()) {
    RSIO_TRY(json r, api.call("DELETE", fmt::format("/1.0/devices/{}{}", url_encode(a.detach),
                                                    a.force ? "?force=true" : "")));
    if (a.json_out) print_json(r);
    return {};
  }
  if (a.show_config) {
    RSIO_TRY(json r, api.call("GET", "/1.0/config"));
    print_json(r);
    return {};
  }
  json r;
  if (!a.set_node.empty() || !a.key.empty()) {
    json body = json::object();
    if (!a.set_node.empty()) body["name"] = a.set_node;
    if (!a.key.empty()) body["key"] = a.key;
    RSIO_TRY(r, api.call("PUT", "/1.0/node", body));
  } else if (!a.add_server.empty()) {
    if (a.addresses.empty()) throw UsageError("--add-server needs --address HOST:PORT");
    RSIO_TRY(r, api.call("POST", "/1.0/servers",
                         json{{"name", a.add_server},
                              {"namespace", a.namespace_index},
                              {"paths", a.addresses}}));
  } else if (!a.remove_server.empty()) {
    RSIO_TRY(r, api.call("DELETE", fmt::format("/1.0/servers/{}", url_encode(a.remove_server))));
  } else if (!a.add_address.empty()) {
    RSIO_TRY(r, api.call("POST", fmt::format("/1.0/servers/{}/paths", url_encode(a.add_address[0])),
                         json{{"path", a.add_address[1]}}));
  } else {
    RSIO_TRY(r, api.call("DELETE",
                         fmt::format("/1.0/servers/{}/paths/{}", url_encode(a.remove_address[0]),
                                     url_encode(a.remove_address[1]))));
  }
  if (a.json_out) print_json(r);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "rsconfig - the RSIO client: see granted volumes and attach them as block devices.\n\n"
      "Examples:\n"
      "  rsconfig --set-node tux --key Linuxtag          this node's name and key\n"
      "  rsconfig --add-server trainator --address 192.168.1.100:5000@192.168.1.110 \\\n"
      "           --address 192.168.2.100:5000@192.168.2.110   two paths (multipath)\n"
      "  rsconfig -q / -qvv                              volumes granted to this node\n"
      "  rsconfig -a                                     attach every granted volume\n"
      "  rsconfig -a eisberg                             attach one: /dev/av0/eisberg\n"
      "  rsconfig -l / -lvv                              attached devices\n"
      "  rsconfig -d eisberg                             detach (refused while mounted)\n",
      "rsconfig"};
  app.get_formatter()->column_width(40);
  app.add_flag("-q,--query", a.query, "List the volumes granted to this node (-qvv: devices too)");
  app.add_flag("-v,--verbose", a.verbose,
               "More detail; repeat for more (-qvv, -lvv, -lvvv: paths and connections)");
  app.add_flag("-a,--attach", a.attach, "Attach granted volumes (all, or those named)");
  app.add_option("volumes", a.volumes, "With -a: the volumes to attach")->type_name("VOLUME");
  app.add_option("--server", a.server, "With -a: attach from this server only")
      ->type_name("SERVER");
  app.add_flag("--read-only", a.read_only, "With -a: attach read-only");
  app.add_flag("-l,--list", a.list, "List attached devices (-lvv: with device paths)");
  app.add_option("-d,--detach", a.detach, "Detach VOLUME (refused while in use)")
      ->type_name("VOLUME");
  app.add_flag("-f,--force", a.force, "With -d: detach even while mounted (users get I/O errors)");
  app.add_option("--set-node", a.set_node, "Set this node's name (as registered by rsadmin -c)")
      ->type_name("NAME");
  app.add_option("--key", a.key, "Set this node's key (with or without --set-node)")
      ->type_name("KEY");
  app.add_option("--add-server", a.add_server, "Add an RSIO server by NAME (needs --address)")
      ->type_name("NAME");
  app.add_option("--address", a.addresses, "With --add-server: a path, once per path")
      ->type_name("HOST:PORT[@LOCAL]");
  app.add_option("--namespace", a.namespace_index, "With --add-server: namespace index (av<N>)")
      ->type_name("N");
  app.add_option("--remove-server", a.remove_server, "Remove a server (no volume attached)")
      ->type_name("SERVER");
  app.add_option("--add-address", a.add_address, "Add a path to a server")
      ->expected(2)
      ->type_name("SERVER ADDRESS");
  app.add_option("--remove-address", a.remove_address, "Remove a path from a server")
      ->expected(2)
      ->type_name("SERVER ADDRESS");
  app.add_flag("--show-config", a.show_config, "Print the configuration (without the key)");
  app.add_flag("--json", a.json_out, "JSON output");
  app.add_option("--socket", a.socket,
                 "rsclientd's socket (default /run/rsio/rsclientd.sock, or $RSCLIENT_SOCKET)")
      ->type_name("PATH")
      ->envname("RSCLIENT_SOCKET");
  return run_cli(app, argc, argv, [&]() -> Status {
    ApiClient api(a.socket, "rsclientd",
                  fmt::format("Start it with `systemctl start rsclientd` or `rsclientd --socket "
                              "{}`; use --socket or RSCLIENT_SOCKET for another one",
                              a.socket));
    a.namespace_given = app.count("--namespace") > 0;
    return run(api, a);
  });
}
