// Thread model: see fuse_frontend.h.
#define FUSE_USE_VERSION 31
#include "fuse_frontend.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fuse.h>
#include <linux/falloc.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "common/log.h"

namespace rsio::rsclient {

namespace {

constexpr uint32_t kMaxTransfer = 1U << 20;

}  // namespace

struct FuseFrontend::Impl {
  std::string mount_dir;
  fuse* f = nullptr;
  std::thread thread;
  struct File {
    std::shared_ptr<BlockBackend> backend;
    std::string loop_dev;
    dev_t rdev = 0;
  };
  mutable std::mutex mu;
  std::map<std::string, File> files;  // GUARDED_BY(mu)

  static Impl* self() { return static_cast<Impl*>(fuse_get_context()->private_data); }

  Result<std::string> loop_device_of(const std::string& name) const {
    std::lock_guard lock(mu);
    auto it = files.find(name);
    if (it == files.end())
      return make_error(Errc::kNotFound, fmt::format("{} is not attached", name));
    return it->second.loop_dev;
  }

  std::shared_ptr<BlockBackend> find(const char* path) const {
    if (path == nullptr || path[0] != '/') return nullptr;
    std::lock_guard lock(mu);
    auto it = files.find(path + 1);
    return it == files.end() ? nullptr : it->second.backend;
  }

  static BlockBackend* backend_of(fuse_file_info* fi) {
    return reinterpret_cast<std::shared_ptr<BlockBackend>*>(fi->fh)->get();
  }

  // --- FUSE operations ------------------------------------------------------------------

  static void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
    conn->max_write = kMaxTransfer;
    cfg->direct_io = 1;     // no page cache in FUSE: the loop device above has its own
    cfg->attr_timeout = 0;  // a resized volume's size is seen at once
    cfg->entry_timeout = 0;
    cfg->negative_timeout = 0;
    return fuse_get_context()->private_data;
  }

  static int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
    std::memset(st, 0, sizeof(*st));
    if (std::strcmp(path, "/") == 0) {
      st->st_mode = S_IFDIR | 0700;
      st->st_nlink = 2;
      return 0;
    }
    auto b = self()->find(path);
    if (!b) return -ENOENT;
    st->st_mode = S_IFREG | (b->read_only() ? 0400 : 0600);
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(b->size_bytes());
    st->st_blksize = 4096;
    st->st_blocks = static_cast<blkcnt_t>(b->size_bytes() / 512);
    return 0;
  }

  static int op_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, fuse_file_info*,
                        fuse_readdir_flags) {
    if (std::strcmp(path, "/") != 0) return -ENOTDIR;
    filler(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    filler(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    Impl* me = self();
    std::lock_guard lock(me->mu);
    for (const auto& [name, file] : me->files)
      filler(buf, name.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    return 0;
  }

  static int op_open(const char* path, fuse_file_info* fi) {
    auto b = self()->find(path);
    if (!b) return -ENOENT;
    if (b->read_only() && (fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    fi->direct_io = 1;
    fi->fh = reinterpret_cast<uint64_t>(new std::shared_ptr<BlockBackend>(std::move(b)));
    return 0;
  }

  static int op_release(const char*, fuse_file_info* fi) {
    delete reinterpret_cast<std::shared_ptr<BlockBackend>*>(fi->fh);
    return 0;
  }

  static int op_read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
    BlockBackend* b = backend_of(fi);
    const uint64_t vsize = b->size_bytes();
    if (off < 0) return -EINVAL;
    if (static_cast<uint64_t>(off) >= vsize) return 0;
    size = static_cast<size_t>(std::min<uint64_t>(size, vsize - static_cast<uint64_t>(off)));
    const int rc = b->read(buf, size, static_cast<uint64_t>(off));
    return rc < 0 ? rc : static_cast<int>(size);
  }

  static int op_write(const char*, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
    BlockBackend* b = backend_of(fi);
    if (b->read_only()) return -EROFS;
    if (off < 0 || static_cast<uint64_t>(off) + size > b->size_bytes()) return -ENOSPC;
    const int rc = b->write(buf, size, static_cast<uint64_t>(off));
    return rc < 0 ? rc : static_cast<int>(size);
  }

  static int op_fsync(const char*, int, fuse_file_info* fi) { return backend_of(fi)->flush(); }
  static int op_flush(const char*, fuse_file_info*) { return 0; }  // close(): nothing to do

  static int op_fallocate(const char*, int mode, off_t off, off_t len, fuse_file_info* fi) {
    BlockBackend* b = backend_of(fi);
    if (b->read_only()) return -EROFS;
    if ((mode & FALLOC_FL_KEEP_SIZE) == 0) return -EOPNOTSUPP;
    if ((mode & FALLOC_FL_PUNCH_HOLE) != 0)
      return b->discard(static_cast<uint64_t>(len), static_cast<uint64_t>(off));
    return -EOPNOTSUPP;
  }

  static int op_truncate(const char* path, off_t size, fuse_file_info*) {
    auto b = self()->find(path);
    if (!b) return -ENOENT;
    return static_cast<uint64_t>(size) == b->size_bytes() ? 0 : -EPERM;
  }
};

FuseFrontend::FuseFrontend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<FuseFrontend>> FuseFrontend::start(const std::string& mount_dir) {
  if (::access("/dev/fuse", R_OK | W_OK) != 0)
    return make_error(Errc::kUnavailable,
                      fmt::format("FUSE is not available (/dev/fuse: {}); install fuse3 and "
                                  "load the fuse module (modprobe fuse), or run where ublk is",
                                  std::strerror(errno)));
  std::error_code ec;
  std::filesystem::create_directories(mount_dir, ec);
  ::umount2(mount_dir.c_str(), MNT_DETACH);  // a stale mount of a crashed rsclientd
  auto impl = std::make_unique<Impl>();
  impl->mount_dir = mount_dir;
  static const fuse_operations ops = [] {
    fuse_operations o{};
    o.init = &Impl::op_init;
    o.getattr = &Impl::op_getattr;
    o.readdir = &Impl::op_readdir;
    o.open = &Impl::op_open;
    o.release = &Impl::op_release;
    o.read = &Impl::op_read;
    o.write = &Impl::op_write;
    o.fsync = &Impl::op_fsync;
    o.flush = &Impl::op_flush;
    o.fallocate = &Impl::op_fallocate;
    o.truncate = &Impl::op_truncate;
    return o;
  }();
  const char* argv[] = {"rsclientd", "-o", "fsname=rsio,subtype=rsio"};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  impl->f = fuse_new(&args, &ops, sizeof(ops), impl.get());
  fuse_opt_free_args(&args);
  if (impl->f == nullptr) return make_error(Errc::kUnavailable, "fuse_new failed");
  if (fuse_mount(impl->f, mount_dir.c_str()) != 0) {
    fuse_destroy(impl->f);
    return make_error(Errc::kUnavailable,
                      fmt::format("cannot mount the FUSE file system on {}", mount_dir));
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { fuse_loop_mt(raw->f, 0); });
  log::info("FUSE frontend serving volumes as files in {}", mount_dir);
  return std::unique_ptr<FuseFrontend>(new FuseFrontend(std::move(impl)));
}

FuseFrontend::~FuseFrontend() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [name, f] : impl_->files) names.push_back(name);
  }
  for (const auto& n : names) (void)detach(n, true);
  fuse_exit(impl_->f);
  fuse_unmount(impl_->f);
  // The loop ends once the session is gone; a request still in a worker finishes first.
  if (impl_->thread.joinable()) impl_->thread.join();
  fuse_destroy(impl_->f);
}

std::vector<std::string> FuseFrontend::release_all() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [name, f] : impl_->files) names.push_back(name);
  }
  for (const auto& n : names) (void)detach(n, true);
  return {};
}

Result<std::string> FuseFrontend::attach(const std::string& name,
                                         std::shared_ptr<BlockBackend> backend,
                                         const std::string& /*resume*/) {
  const bool ro = backend->read_only();
  const uint32_t block_size = backend->block_size_bytes();
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->files.count(name) > 0)
      return make_error(Errc::kAlreadyExists, fmt::format("{} is attached already", name));
    impl_->files[name] = Impl::File{std::move(backend), "", 0};
  }
  auto undo = [&](Error e) -> Result<std::string> {
    std::lock_guard lock(impl_->mu);
    impl_->files.erase(name);
    return e;
  };
  const std::string file = impl_->mount_dir + "/" + name;
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0)
    return undo(errno_error("open /dev/loop-control (is the loop module loaded?)", errno));
  std::string dev;
  dev_t rdev = 0;
  int err = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      err = errno;
      break;
    }
    dev = fmt::format("/dev/loop{}", n);
    int lfd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (lfd < 0) {
      err = errno;
      continue;
    }
    int bfd = ::open(file.c_str(), (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (bfd < 0) {
      err = errno;
      ::close(lfd);
      break;
    }
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(bfd);
    cfg.block_size = block_size;
    cfg.info.lo_flags = ro ? LO_FLAGS_READ_ONLY : 0;
    std::snprintf(reinterpret_cast<char*>(cfg.info.lo_file_name), LO_NAME_SIZE, "rsio:%s",
                  name.c_str());
    const int rc = ::ioctl(lfd, LOOP_CONFIGURE, &cfg);
    err = rc == 0 ? 0 : errno;
    ::close(bfd);
    struct stat st {};
    if (rc == 0 && ::fstat(lfd, &st) == 0) rdev = st.st_rdev;
    ::close(lfd);
    if (rc == 0) break;
    if (err != EBUSY) break;  // EBUSY: another process took this loop device; try the next
  }
  ::close(ctl);
  if (err != 0 || rdev == 0)
    return undo(errno_error(fmt::format("cannot bind {} to a loop device", file), err));
  std::lock_guard lock(impl_->mu);
  impl_->files[name].loop_dev = dev;
  impl_->files[name].rdev = rdev;
  return dev;
}

bool block_device_busy(const std::string& dev) {
  int fd = ::open(dev.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
  if (fd < 0) return errno == EBUSY;
  ::close(fd);
  return false;
}

Status FuseFrontend::detach(const std::string& name, bool force) {
  RSIO_TRY(std::string dev, impl_->loop_device_of(name));
  if (!force && block_device_busy(dev))
    return make_error(Errc::kInUse,
                      fmt::format("{} ({}) is in use (mounted?); unmount it first, or detach with "
                                  "--force (its users then get I/O errors)",
                                  name, dev));
  int lfd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (lfd >= 0) {
    // While the device is still open elsewhere the kernel detaches it on the last close.
    if (::ioctl(lfd, LOOP_CLR_FD, 0) != 0 && errno != ENXIO)
      log::warn("{}: LOOP_CLR_FD: {}", dev, std::strerror(errno));
    ::close(lfd);
  }
  std::lock_guard lock(impl_->mu);
  impl_->files.erase(name);
  return {};
}

Status FuseFrontend::resized(const std::string& name) {
  RSIO_TRY(std::string dev, impl_->loop_device_of(name));
  int lfd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (lfd < 0) return errno_error(fmt::format("open {}", dev), errno);
  const int rc = ::ioctl(lfd, LOOP_SET_CAPACITY, 0);
  const int err = errno;
  ::close(lfd);
  if (rc != 0) return errno_error(fmt::format("{}: LOOP_SET_CAPACITY", dev), err);
  return {};
}

Result<dev_t> FuseFrontend::device_number(const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->files.find(name);
  if (it == impl_->files.end())
    return make_error(Errc::kNotFound, fmt::format("{} is not attached", name));
  return it->second.rdev;
}

}  // namespace rsio::rsclient
