// rsadmin: administration of RSIO clients (nodes), their grants on volumes, and sessions.
// Thin: parses the command line, calls rsiod's management API, prints.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/random.h>

#include <map>
#include <string>
#include <vector>

#include "cli/api_client.h"

using nlohmann::json;
using namespace rsio;
using namespace rsio::cli;

namespace {

struct Args {
  bool query = false;
  int verbose = 0;
  bool access = false;
  bool opens = false;
  bool sessions = false;
  std::string create;
  std::string key;
  std::vector<std::string> grant;
  bool read_only = false;
  std::vector<std::string> revoke;
  std::string remove;
  bool force = false;
  bool json_out = false;
  std::string socket = kDefaultSocket;
};

void print_json(const json& j) { fmt::print("{}\n", j.dump(2)); }

std::string random_key() {
  static constexpr char kAlphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  constexpr unsigned kLetters = sizeof(kAlphabet) - 1;
  constexpr unsigned kLimit = 256 / kLetters * kLetters;  // reject the rest: no modulo bias
  std::string key;
  while (key.size() < 16) {
    unsigned char c = 0;
    if (getrandom(&c, 1, 0) == 1 && c < kLimit) key += kAlphabet[c % kLetters];
  }
  return key;
}

Status list_clients(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", a.verbose > 0 ? "/1.0/clients?keys=true" : "/1.0/clients"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  if (a.verbose > 0) {
    fmt::print("{}\n", rstrip(fmt::format("{:>4} {:<16} {:<35} {}", "id", "node name", "node key",
                                          "mode")));
    fmt::print("{}\n", std::string(79, '-'));
    for (const auto& c : r["clients"])
      fmt::print("{}\n",
                 rstrip(fmt::format("{:04} {:<16} {:<35} {}", c["id"].get<int64_t>(),
                                    c["name"].get<std::string>(), c["node_key"].get<std::string>(),
                                    c["mode"].get<std::string>())));
  } else {
    for (const auto& c : r["clients"])
      fmt::print("{}\n", rstrip(fmt::format("{:04} {:<16}", c["id"].get<int64_t>(),
                                            c["name"].get<std::string>())));
  }
  return {};
}

Status list_grants(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/grants"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  // Grants come ordered by volume, then client name: one line per volume, read-only grants
  // marked "(ro)".
  struct Row {
    int ns = 0;
    std::string volume;
    std::vector<std::string> clients;
  };
  std::vector<Row> rows;
  for (const auto& g : r["grants"]) {
    const std::string vol = g["volume"].get<std::string>();
    std::string who = g["client"].get<std::string>();
    if (g["access"] == "ro") who += "(ro)";
    if (rows.empty() || rows.back().volume != vol)
      rows.push_back({g["namespace_index"].get<int>(), vol, {}});
    rows.back().clients.push_back(who);
  }
  for (const Row& row : rows)
    fmt::print("{}\n", rstrip(fmt::format("{} {:<16}: {}", row.ns, row.volume,
                                          fmt::join(row.clients, ","))));
  return {};
}

Status list_opens(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/opens"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  for (const auto& v : r["volumes"]) {
    const int ns = v["namespace_index"].get<int>();
    const std::string name = v["volume"].get<std::string>();
    if (v["openers"].empty()) {
      fmt::print("{}\n", rstrip(fmt::format("{} {:<21}{:>2} {:<16}", ns, name, 0, "---")));
      continue;
    }
    for (const auto& o : v["openers"])
      fmt::print("{}\n", rstrip(fmt::format(
                             "{} {:<21}{:>2} {:<16}  {}", ns, name, o["client_id"].get<int64_t>(),
                             o["client"].get<std::string>(), o["mode"].get<std::string>())));
  }
  return {};
}

Status list_sessions(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/sessions"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  fmt::print("{:03} {}\n", r["namespace"]["index"].get<int>(),
             r["namespace"]["name"].get<std::string>());
  for (const auto& s : r["sessions"]) {
    std::string line =
        fmt::format("    {:03} (id {:>3}) {:<16}", r["namespace"]["index"].get<int>(),
                    s["client_id"].get<int64_t>(), s["client"].get<std::string>());
    if (a.verbose >= 2) line += " " + s.value("platform", std::string());
    // A session that lost its paths is kept a while for the node to join again.
    if (s["paths"].empty()) line += "  (no path: waiting for the node to reconnect)";
    fmt::print("{}\n", rstrip(line));
    if (a.verbose >= 3)
      for (const auto& p : s["paths"])
        fmt::print("    {}\n", p.value("description", std::string()));
  }
  return {};
}

Status run(ApiClient& api, const Args& a) {
  const int actions = int{a.query || a.access || a.opens} + int{a.sessions} +
                      int{!a.create.empty()} + int{!a.grant.empty()} + int{!a.revoke.empty()} +
                      int{!a.remove.empty()};
  if (!a.key.empty() && a.create.empty()) throw UsageError("-k/--key belongs to -c/--create");
  if (a.read_only && a.grant.empty()) throw UsageError("--read-only belongs to -g/--grant");
  if (a.force && a.remove.empty()) throw UsageError("-f/--force belongs to -d/--delete");
  if (actions == 0) throw UsageError("say what to do: -q, -qv, -qa, -qA, -l, -c, -g, -r or -d");
  if (actions > 1) throw UsageError("give one action at a time");

  if (a.access) return list_grants(api, a);
  if (a.opens) return list_opens(api, a);
  if (a.query) return list_clients(api, a);
  if (a.sessions) return list_sessions(api, a);

  if (!a.create.empty()) {
    const std::string key = a.key.empty() ? random_key() : a.key;
    RSIO_TRY(json r, api.call("POST", "/1.0/clients", json{{"name", a.create}, {"node_key", key}}));
    if (a.json_out) {
      if (a.key.empty()) r["node_key"] = key;  // generated here: the only place it is shown
      print_json(r);
      return {};
    }
    fmt::print("node {} added with rs nodeid {}\n", r["name"].get<std::string>(),
               r["id"].get<int64_t>());
    if (a.key.empty()) fmt::print("node key: {}\n", key);
    return {};
  }
  if (!a.grant.empty()) {
    RSIO_TRY(json r, api.call("POST", "/1.0/grants",
                              json{{"volume", a.grant[0]},
                                   {"client", a.grant[1]},
                                   {"access", a.read_only ? "ro" : "rw"}}));
    if (a.json_out) {
      print_json(r);
      return {};
    }
    fmt::print("{}access to {}@{} granted to {}\n", a.read_only ? "read-only " : "",
               r["volume"].get<std::string>(), r["namespace_index"].get<int>(),
               r["client"].get<std::string>());
    return {};
  }
  if (!a.revoke.empty()) {
    RSIO_TRY(json r, api.call("DELETE", fmt::format("/1.0/grants/{}/{}", url_encode(a.revoke[0]),
                                                    url_encode(a.revoke[1]))));
    if (a.json_out) {
      print_json(r);
      return {};
    }
    fmt::print("access to {}@{} revoked from {}\n", a.revoke[0],
               r["revoked"]["namespace_index"].get<int>(), a.revoke[1]);
    return {};
  }
  RSIO_TRY(json r, api.call("DELETE", fmt::format("/1.0/clients/{}{}", url_encode(a.remove),
                                                  a.force ? "?force=true" : "")));
  if (a.json_out)
    print_json(r);
  else
    fmt::print("node {} deleted\n", a.remove);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "rsadmin - administer RSIO client nodes, their access to volumes, and sessions.\n\n"
      "Examples:\n"
      "  rsadmin -q                     list nodes (-qv: with node keys)\n"
      "  rsadmin -c tux -k Linuxtag     register node tux with its node key\n"
      "  rsadmin -g eisberg tux         grant tux read-write access to volume eisberg\n"
      "  rsadmin -qa                    list grants per volume\n"
      "  rsadmin -qA                    list which node has which volume open\n"
      "  rsadmin -l / -lvv / -lvvv      list connected nodes, platforms and paths\n",
      "rsadmin"};
  app.get_formatter()->column_width(30);
  app.add_flag("-q,--query", a.query, "List registered nodes");
  app.add_flag("-v,--verbose", a.verbose, "More detail; repeat for more (-vv, -vvv)");
  app.add_flag("-a,--access", a.access, "List grants per volume (-qa)");
  app.add_flag("-A,--opens", a.opens, "List volumes and who has them open (-qA)");
  app.add_flag("-l,--sessions", a.sessions, "List connected nodes (sessions)");
  app.add_option("-c,--create", a.create, "Register a node with this name")->type_name("NODE");
  app.add_option("-k,--key", a.key, "Node key for -c (generated and printed when omitted)")
      ->type_name("KEY");
  app.add_option("-g,--grant", a.grant, "Grant NODE access to VOLUME")
      ->expected(2)
      ->type_name("VOLUME NODE");
  app.add_flag("--read-only,--ro", a.read_only, "With -g: grant read-only access");
  app.add_option("-r,--revoke", a.revoke, "Revoke NODE's access to VOLUME")
      ->expected(2)
      ->type_name("VOLUME NODE");
  app.add_option("-d,--delete", a.remove, "Delete a node (refused while it has grants)")
      ->type_name("NODE");
  app.add_flag("-f,--force", a.force, "With -d: delete the node's grants too");
  app.add_flag("--json", a.json_out, "Print the API's JSON instead of the table");
  add_socket_option(app, a.socket);
  return run_cli(app, argc, argv, [&] {
    ApiClient api(a.socket);
    return run(api, a);
  });
}
