#include "volmgr/device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace rsio::volmgr {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

bool same_device(const DeviceProbe& a, const DeviceProbe& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == PvKind::kBlock) return a.st_rdev == b.st_rdev;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

Result<DeviceProbe> probe_device(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr)
    return errno_error(fmt::format("device {}", path), errno);
  struct stat st {};
  if (::stat(resolved, &st) != 0) return errno_error(fmt::format("stat {}", resolved), errno);
  DeviceProbe p;
  p.canonical_path = resolved;
  p.st_dev = st.st_dev;
  p.st_ino = st.st_ino;
  p.st_rdev = st.st_rdev;
  if (S_ISREG(st.st_mode)) {
    p.kind = PvKind::kFile;
    p.size_bytes = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    p.kind = PvKind::kBlock;
    int fd = ::open(resolved, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_error(fmt::format("open {}", resolved), errno);
    uint64_t size = 0;
    int rc = ::ioctl(fd, BLKGETSIZE64, &size);
    int err = errno;
    ::close(fd);
    if (rc != 0) return errno_error(fmt::format("BLKGETSIZE64 {}", resolved), err);
    p.size_bytes = size;
  } else {
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{} is neither a regular file nor a block device", path));
  }
  return p;
}

Status create_sparse_file(const std::string& path, uint64_t size_bytes) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error(fmt::format("create {}", path), errno);
  UniqueFd owner(fd);
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return errno_error(fmt::format("size {} to {} bytes", path, size_bytes), err);
  }
  return {};
}

Result<UniqueFd> open_device(const std::string& path, bool exclusive) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno_error(fmt::format("device {}", path), errno);
  int flags = O_RDWR | O_CLOEXEC;
  if (exclusive && S_ISBLK(st.st_mode)) flags |= O_EXCL;
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) {
    int err = errno;
    if (err == EBUSY)
      return make_error(Errc::kInUse, fmt::format("device {} is in use (mounted, or held by "
                                                  "another driver); free it first",
                                                  path));
    return errno_error(fmt::format("open {}", path), err);
  }
  return UniqueFd(fd);
}

Status read_at(int fd, std::span<std::byte> buf, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n =
        ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(what, errno);
    if (n == 0) {  // short file: the rest reads as zeroes
      std::memset(buf.data() + done, 0, buf.size() - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Status write_at(int fd, std::span<const std::byte> buf, uint64_t offset, std::string_view what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n =
        ::pwrite(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_error(what, n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<std::optional<PvLabel>> read_label(int fd) {
  LabelBlock block{};
  RSIO_TRY_STATUS(read_at(fd, block, 0, "read label"));
  return decode_label(block);
}

namespace {

Status write_block(int fd, const LabelBlock& block) {
  RSIO_TRY_STATUS(write_at(fd, block, 0, "write label"));
  if (::fdatasync(fd) != 0) return errno_error("fdatasync label", errno);
  return {};
}

}  // namespace

Status write_label(int fd, const PvLabel& label) { return write_block(fd, encode_label(label)); }

Status wipe_label(int fd) { return write_block(fd, LabelBlock{}); }

Result<std::optional<std::string>> detect_signature(int fd) {
  // 68 KiB covers the signatures below, the furthest being btrfs's at 64 KiB + 64.
  std::vector<unsigned char> b(68 * 1024, 0);
  RSIO_TRY_STATUS(read_at(fd, std::as_writable_bytes(std::span(b)), 0, "read device start"));
  auto at = [&](size_t off, std::string_view magic) {
    return off + magic.size() <= b.size() &&
           std::memcmp(b.data() + off, magic.data(), magic.size()) == 0;
  };
  using R = std::optional<std::string>;
  static constexpr std::string_view kMdMagic("\xfc\x4e\x2b\xa9", 4);  // 0xa92b4efc LE
  static constexpr std::string_view kBcacheMagic(
      "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81", 16);
  if (at(0, "LUKS\xba\xbe") || at(0, "SKUL\xba\xbe")) return R("a LUKS encrypted volume");
  if (at(0, kMdMagic) || at(4096, kMdMagic)) return R("an MD RAID member");
  if (at(4096 + 24, kBcacheMagic)) return R("a bcache device");
  if (b[1080] == 0x53 && b[1081] == 0xEF) return R("an ext2/3/4 file system");
  if (at(0, "XFSB")) return R("an XFS file system");
  if (at(65536 + 64, "_BHRfS_M")) return R("a btrfs file system");
  if (at(3, "NTFS    ")) return R("an NTFS file system");
  if (at(32769, "CD001")) return R("an ISO 9660 image");
  for (size_t off : {0, 512, 1024, 1536})
    if (at(off, "LABELONE")) return R("an LVM physical volume");
  if (at(512, "EFI PART") || at(4096, "EFI PART")) return R("a GPT partition table");
  if (at(4086, "SWAPSPACE2") || at(4086, "SWAP-SPACE")) return R("a swap area");
  if (b[510] == 0x55 && b[511] == 0xAA) return R("a DOS partition table or boot sector");
  return R();
}

}  // namespace rsio::volmgr
