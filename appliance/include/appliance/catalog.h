// Client nodes and their grants on volumes, persisted in the metadata database and cached in
// memory. Volumes are referred to by id; the VolumeManager owns them.
//
// Thread-safety: not thread-safe; rsiod uses it from its metadata thread only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "db/sqlite.h"

namespace rsio::appliance {

inline constexpr size_t kNodeKeyLengthMax = 64;

enum class Access { kReadWrite, kReadOnly };
std::string_view access_name(Access a);  // "rw" / "ro"

struct Client {
  int64_t id = 0;  // the "rs nodeid", shown as 0003
  std::string name;
  std::string node_key;
  std::string mode;  // "rsio client"
  int64_t created_ms = 0;
};

struct Grant {
  int64_t volume_id = 0;
  int64_t client_id = 0;
  Access access = Access::kReadWrite;
  int64_t created_ms = 0;
};

class Catalog {
 public:
  // Loads clients and grants. `db` must outlive the catalog.
  static Result<std::unique_ptr<Catalog>> open(db::Database& db);

  // Registers a node. Errors: kInvalidArgument (name, key), kAlreadyExists.
  Result<Client> add_client(std::string_view name, std::string_view node_key);
  // Removes a node; with `force` also its grants. Errors: kNotFound, kInUse (has grants).
  Status delete_client(std::string_view name, bool force);

  // Grants (or changes the access of an existing grant). Errors: kNotFound (client).
  Result<Grant> grant(int64_t volume_id, std::string_view client_name, Access access);
  // Errors: kNotFound (client, or no such grant).
  Status revoke(int64_t volume_id, std::string_view client_name);

  // Inside a volume's delete transaction: refuses (kInUse) while the volume is granted
  // unless `force`, in which case its grants are removed. Call forget_volume() after commit.
  Status check_and_drop_grants(db::Database& db, int64_t volume_id, std::string_view volume_name,
                               bool force) const;
  void forget_volume(int64_t volume_id);
  // The error check_and_drop_grants() returns for a granted volume without `force`.
  Error check_and_drop_grants_error(int64_t volume_id, std::string_view volume_name) const;

  const Client* find_client(std::string_view name) const;
  const Client* find_client(int64_t id) const;
  // Clients in id order.
  std::vector<const Client*> clients() const;
  // Grants ordered by volume id, then client name.
  std::vector<Grant> grants() const;
  std::vector<Grant> grants_of_volume(int64_t volume_id) const;

 private:
  explicit Catalog(db::Database& db) : db_(db) {}
  Status load();

  db::Database& db_;
  std::map<int64_t, Client> clients_;
  std::map<std::pair<int64_t, int64_t>, Grant> grants_;  // (volume_id, client_id)
};

// Node keys: 1..64 printable ASCII characters without spaces.
Status validate_node_key(std::string_view key);

}  // namespace rsio::appliance
