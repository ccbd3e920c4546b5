#include "appliance/catalog.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "common/ids.h"
#include "common/log.h"
#include "common/names.h"

namespace rsio::appliance {

std::string_view access_name(Access a) { return a == Access::kReadOnly ? "ro" : "rw"; }

Status validate_node_key(std::string_view key) {
  if (key.empty() || key.size() > kNodeKeyLengthMax)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("node key must be 1 to {} characters long", kNodeKeyLengthMax));
  for (char c : key)
    if (c <= ' ' || c > '~')
      return make_error(Errc::kInvalidArgument,
                        "node key must consist of printable ASCII characters without spaces");
  return {};
}

Result<std::unique_ptr<Catalog>> Catalog::open(db::Database& db) {
  std::unique_ptr<Catalog> c(new Catalog(db));
  RSIO_TRY_STATUS(c->load());
  return c;
}

Status Catalog::load() {
  RSIO_TRY(db::Statement * st,
           db_.prepare("SELECT id, name, node_key, mode, created_ms FROM clients"));
  for (;;) {
    RSIO_TRY(bool row, st->step());
    if (!row) break;
    Client c{st->column_int64(0), st->column_text(1), st->column_text(2), st->column_text(3),
             st->column_int64(4)};
    clients_.emplace(c.id, std::move(c));
  }
  RSIO_TRY(db::Statement * g,
           db_.prepare("SELECT volume_id, client_id, access, created_ms FROM grants"));
  for (;;) {
    RSIO_TRY(bool row, g->step());
    if (!row) break;
    Grant gr{g->column_int64(0), g->column_int64(1),
             g->column_text(2) == "ro" ? Access::kReadOnly : Access::kReadWrite,
             g->column_int64(3)};
    grants_.emplace(std::pair(gr.volume_id, gr.client_id), gr);
  }
  return {};
}

Result<Client> Catalog::add_client(std::string_view name, std::string_view node_key) {
  RSIO_TRY_STATUS(validate_name(name, "node name"));
  RSIO_TRY_STATUS(validate_node_key(node_key));
  if (const Client* existing = find_client(name))
    return make_error(Errc::kAlreadyExists,
                      fmt::format("node {} already exists with rs nodeid {}; delete it first "
                                  "(rsadmin -d {}) to register it again",
                                  name, existing->id, name));
  Client c;
  c.name = std::string(name);
  c.node_key = std::string(node_key);
  c.mode = "rsio client";
  c.created_ms = now_ms();
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(
      db::Statement * st,
      db_.prepare("INSERT INTO clients (name, node_key, mode, created_ms) VALUES (?, ?, ?, ?)"));
  st->bind_all(c.name, c.node_key, c.mode, c.created_ms);
  RSIO_TRY_STATUS(st->run());
  c.id = db_.last_insert_rowid();
  RSIO_TRY_STATUS(txn.commit());
  log::info("client added: node={} nodeid={}", c.name, c.id);
  clients_.emplace(c.id, c);
  return c;
}

Status Catalog::delete_client(std::string_view name, bool force) {
  const Client* c = find_client(name);
  if (c == nullptr)
    return make_error(Errc::kNotFound,
                      fmt::format("node {} does not exist; `rsadmin -q` lists the nodes", name));
  const int64_t id = c->id;
  size_t granted = 0;
  for (const auto& [key, g] : grants_) granted += g.client_id == id ? 1 : 0;
  if (granted > 0 && !force)
    return make_error(Errc::kInUse, fmt::format("node {} still has access to {} volume(s); revoke "
                                                "them first or add --force to drop them too",
                                                name, granted));
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * g, db_.prepare("DELETE FROM grants WHERE client_id = ?"));
  g->bind_all(id);
  RSIO_TRY_STATUS(g->run());
  RSIO_TRY(db::Statement * st, db_.prepare("DELETE FROM clients WHERE id = ?"));
  st->bind_all(id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  std::erase_if(grants_, [&](const auto& kv) { return kv.second.client_id == id; });
  clients_.erase(id);
  log::info("client deleted: node={} grants_dropped={}", name, granted);
  return {};
}

Result<Grant> Catalog::grant(int64_t volume_id, std::string_view client_name, Access access) {
  const Client* c = find_client(client_name);
  if (c == nullptr)
    return make_error(Errc::kNotFound,
                      fmt::format("node {} does not exist; register it first with `rsadmin -c "
                                  "{} -k KEY`",
                                  client_name, client_name));
  Grant g{volume_id, c->id, access, now_ms()};
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st,
           db_.prepare(
               "INSERT INTO grants (volume_id, client_id, access, created_ms) VALUES (?, ?, ?, ?) "
               "ON CONFLICT (volume_id, client_id) DO UPDATE SET access = excluded.access"));
  st->bind_all(g.volume_id, g.client_id, access_name(access), g.created_ms);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  auto [it, inserted] = grants_.try_emplace(std::pair(volume_id, c->id), g);
  if (!inserted) it->second.access = access;
  log::info("grant: volume_id={} node={} access={}", volume_id, c->name, access_name(access));
  return it->second;
}

Status Catalog::revoke(int64_t volume_id, std::string_view client_name) {
  const Client* c = find_client(client_name);
  if (c == nullptr)
    return make_error(Errc::kNotFound, fmt::format("node {} does not exist", client_name));
  auto it = grants_.find(std::pair(volume_id, c->id));
  if (it == grants_.end())
    return make_error(Errc::kNotFound,
                      fmt::format("node {} has no access to that volume; `rsadmin -qa` lists the "
                                  "grants",
                                  client_name));
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st,
           db_.prepare("DELETE FROM grants WHERE volume_id = ? AND client_id = ?"));
  st->bind_all(volume_id, c->id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  grants_.erase(it);
  log::info("revoke: volume_id={} node={}", volume_id, client_name);
  return {};
}

Status Catalog::check_and_drop_grants(db::Database& db, int64_t volume_id,
                                      std::string_view volume_name, bool force) const {
  if (grants_of_volume(volume_id).empty()) return {};
  if (!force) return check_and_drop_grants_error(volume_id, volume_name);
  RSIO_TRY(db::Statement * st, db.prepare("DELETE FROM grants WHERE volume_id = ?"));
  st->bind_all(volume_id);
  return st->run();
}

Error Catalog::check_and_drop_grants_error(int64_t volume_id, std::string_view volume_name) const {
  std::vector<std::string> names;
  for (const Grant& g : grants_of_volume(volume_id)) names.push_back(clients_.at(g.client_id).name);
  return make_error(Errc::kInUse,
                    fmt::format("volume '{}' is granted to {}; revoke the grants first "
                                "(rsadmin --revoke {} NODE) or add --force",
                                volume_name, fmt::join(names, ","), volume_name));
}

void Catalog::forget_volume(int64_t volume_id) {
  std::erase_if(grants_, [&](const auto& kv) { return kv.second.volume_id == volume_id; });
}

const Client* Catalog::find_client(std::string_view name) const {
  for (const auto& [id, c] : clients_)
    if (c.name == name) return &c;
  return nullptr;
}

const Client* Catalog::find_client(int64_t id) const {
  auto it = clients_.find(id);
  return it == clients_.end() ? nullptr : &it->second;
}

std::vector<const Client*> Catalog::clients() const {
  std::vector<const Client*> out;
  out.reserve(clients_.size());
  for (const auto& [id, c] : clients_) out.push_back(&c);
  return out;
}

std::vector<Grant> Catalog::grants() const {
  std::vector<Grant> out;
  out.reserve(grants_.size());
  for (const auto& [key, g] : grants_) out.push_back(g);
  std::stable_sort(out.begin(), out.end(), [&](const Grant& a, const Grant& b) {
    if (a.volume_id != b.volume_id) return a.volume_id < b.volume_id;
    return clients_.at(a.client_id).name < clients_.at(b.client_id).name;
  });
  return out;
}

std::vector<Grant> Catalog::grants_of_volume(int64_t volume_id) const {
  std::vector<Grant> out;
  for (auto it = grants_.lower_bound(std::pair(volume_id, int64_t{0}));
       it != grants_.end() && it->first.first == volume_id; ++it)
    out.push_back(it->second);
  std::sort(out.begin(), out.end(), [&](const Grant& a, const Grant& b) {
    return clients_.at(a.client_id).name < clients_.at(b.client_id).name;
  });
  return out;
}

}  // namespace rsio::appliance
