// Thread model: every member runs on the loop thread (see loop.h).
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/assert.h"
#include "volmgr/io/device.h"

namespace rsio::volmgr::io {

namespace {

constexpr size_t kZeroBufferBytes = 1 << 20;
constexpr int kIovMax = 1024;
constexpr uint32_t kTransientRetries = 16;

// A shared page-aligned buffer of zeroes for writing zeroes where fallocate cannot.
const void* zero_buffer() {
  static void* buf = [] {
    void* p = std::aligned_alloc(4096, kZeroBufferBytes);
    RSIO_ASSERT(p != nullptr);
    std::memset(p, 0, kZeroBufferBytes);
    return p;
  }();
  return buf;
}

// Per-op state a device keeps while the kernel works on it: iovecs for the remainder of a
// partial transfer or for writing zeroes.
struct OpState {
  std::vector<iovec> iov;
  bool zero_fill = false;  // write-zeroes by writing, fallocate being unsupported
  bool syncing = false;    // FUA discard/write-zeroes: the fdatasync after it
};

class UringDevice final : public Device {
 public:
  UringDevice(Loop& loop, std::string name, int fd, int direct_fd, uint64_t size_bytes,
              uint32_t logical_block_bytes, bool memory_backed)
      : loop_(loop),
        name_(std::move(name)),
        fd_(fd),
        direct_fd_(direct_fd),
        size_bytes_(size_bytes),
        logical_block_bytes_(logical_block_bytes),
        memory_backed_(memory_backed) {}
  ~UringDevice() override {
    ::close(fd_);
    if (direct_fd_ >= 0) ::close(direct_fd_);
  }

  void submit(DevOp* op) override {
    op->done_bytes = 0;
    op->retries = 0;
    op->used_direct = false;
    op->no_direct = false;
    op->device_state = nullptr;
    op->completion.fn = &UringDevice::on_complete;
    issue(op);
  }
  uint64_t size_bytes() const override { return size_bytes_; }
  const std::string& name() const override { return name_; }

 private:
  bool aligned(const DevOp* op, const iovec* iov, int count) const {
    const uint64_t mask = logical_block_bytes_ - 1;
    if (((op->offset_bytes + op->done_bytes) & mask) != 0) return false;
    for (int i = 0; i < count; ++i)
      if ((reinterpret_cast<uintptr_t>(iov[i].iov_base) & mask) != 0 ||
          (iov[i].iov_len & mask) != 0)
        return false;
    return true;
  }

  // The iovecs still to transfer, after `op->done_bytes`.
  std::pair<const iovec*, int> remaining_iov(DevOp* op) {
    auto* st = static_cast<OpState*>(op->device_state);
    if (op->done_bytes == 0 && st == nullptr) return {op->iov, op->iov_count};
    if (st == nullptr) {
      st = new OpState();
      op->device_state = st;
    }
    if (st->zero_fill) {
      st->iov.clear();
      uint64_t left = op->length_bytes - op->done_bytes;
      while (left > 0 && st->iov.size() < kIovMax) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kZeroBufferBytes));
        st->iov.push_back({const_cast<void*>(zero_buffer()), n});
        left -= n;
      }
      return {st->iov.data(), static_cast<int>(st->iov.size())};
    }
    st->iov.clear();
    uint64_t skip = op->done_bytes;
    for (int i = 0; i < op->iov_count; ++i) {
      const iovec& v = op->iov[i];
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      st->iov.push_back({static_cast<char*>(v.iov_base) + skip, v.iov_len - skip});
      skip = 0;
    }
    return {st->iov.data(), static_cast<int>(st->iov.size())};
  }

  // A file in memory (tmpfs, ramfs) has no non-blocking reads, so io_uring would hand every
  // request to a kernel worker thread: two thread switches for what is a memory copy. Such
  // devices do the copy on the loop thread and complete it after the current work.
  void issue_in_memory(DevOp* op) {
    const auto* st = static_cast<OpState*>(op->device_state);
    const bool zero_fill = st != nullptr && st->zero_fill;
    const bool syncing = st != nullptr && st->syncing;
    op->device = this;
    ssize_t res = 0;
    switch (syncing ? Op::kFlush : zero_fill ? Op::kWrite : op->op) {
      case Op::kRead:
      case Op::kWrite: {
        auto [iov, count] = remaining_iov(op);
        const off_t off = static_cast<off_t>(op->offset_bytes + op->done_bytes);
        res = op->op == Op::kRead ? ::preadv(fd_, iov, count, off)
                                  : ::pwritev2(fd_, iov, count, off, op->fua ? RWF_DSYNC : 0);
        break;
      }
      case Op::kFlush:
        res = ::fdatasync(fd_);
        break;
      case Op::kDiscard:
        res =
            ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(op->offset_bytes), static_cast<off_t>(op->length_bytes));
        break;
      case Op::kWriteZeroes:
        res =
            ::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(op->offset_bytes), static_cast<off_t>(op->length_bytes));
        break;
    }
    if (res < 0) res = -errno;
    const bool schedule = finished_.empty();
    finished_.emplace_back(op, static_cast<int>(std::min<ssize_t>(res, INT32_MAX)));
    if (schedule)
      loop_.defer([this] {
        auto batch = std::move(finished_);
        finished_.clear();
        for (auto [o, r] : batch) on_complete(&o->completion, r);
      });
  }

  void issue(DevOp* op) {
    if (memory_backed_) return issue_in_memory(op);
    io_uring_sqe* sqe = loop_.sqe();
    io_uring_sqe_set_data(sqe, &op->completion);
    const auto* st = static_cast<OpState*>(op->device_state);
    const bool zero_fill = st != nullptr && st->zero_fill;
    const bool syncing = st != nullptr && st->syncing;
    op->device = this;
    switch (syncing ? Op::kFlush : zero_fill ? Op::kWrite : op->op) {
      case Op::kRead:
      case Op::kWrite: {
        auto [iov, count] = remaining_iov(op);
        const bool direct = direct_fd_ >= 0 && !op->no_direct && aligned(op, iov, count);
        const int fd = direct ? direct_fd_ : fd_;
        op->used_direct = direct;
        const off_t off = static_cast<off_t>(op->offset_bytes + op->done_bytes);
        // A single buffer needs no iovec import in the kernel.
        if (op->op == Op::kRead && count == 1)
          io_uring_prep_read(sqe, fd, iov[0].iov_base, static_cast<unsigned>(iov[0].iov_len), off);
        else if (op->op == Op::kRead)
          io_uring_prep_readv(sqe, fd, iov, static_cast<unsigned>(count), off);
        else if (count == 1) {
          io_uring_prep_write(sqe, fd, iov[0].iov_base, static_cast<unsigned>(iov[0].iov_len), off);
          sqe->rw_flags = op->fua ? RWF_DSYNC : 0;
        } else
          io_uring_prep_writev2(sqe, fd, iov, static_cast<unsigned>(count), off,
                                op->fua ? RWF_DSYNC : 0);
        break;
      }
      case Op::kFlush:
        io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
        break;
      case Op::kDiscard:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                op->offset_bytes, op->length_bytes);
        break;
      case Op::kWriteZeroes:
        io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                                op->offset_bytes, op->length_bytes);
        break;
    }
  }

  static void on_complete(Completion* c, int res) {
    auto* op = reinterpret_cast<DevOp*>(c);
    auto* self = static_cast<UringDevice*>(op->device);
    auto* st = static_cast<OpState*>(op->device_state);
    const bool zero_fill = st != nullptr && st->zero_fill;
    const bool syncing = st != nullptr && st->syncing;
    if (res == -EINVAL && op->used_direct) {
      // The file system wants a larger alignment for O_DIRECT than the logical block size
      // (4 KiB-sector disks under a file): this transfer goes buffered.
      op->no_direct = true;
      self->issue(op);
      return;
    }
    if ((res == -EAGAIN || res == -EINTR) && op->retries < kTransientRetries) {
      ++op->retries;  // the kernel asks to try again: not a device error
      self->issue(op);
      return;
    }
    const bool range_op = op->op == Op::kDiscard || op->op == Op::kWriteZeroes;
    if (range_op && !zero_fill && !syncing && (res == -EOPNOTSUPP || res == -EINVAL)) {
      // No hole punching / zero range here: write zeroes instead (reads must see zeroes).
      if (st == nullptr) {
        st = new OpState();
        op->device_state = st;
      }
      st->zero_fill = true;
      op->done_bytes = 0;
      self->issue(op);
      return;
    }
    if (range_op && op->fua && res >= 0 && !syncing && !zero_fill) {
      // FUA on a range operation: make it durable before completing.
      if (st == nullptr) {
        st = new OpState();
        op->device_state = st;
      }
      st->syncing = true;
      self->issue(op);
      return;
    }
    const bool transfer = !syncing && (op->op == Op::kRead || op->op == Op::kWrite || zero_fill);
    if (transfer && res > 0) {
      op->done_bytes += static_cast<uint64_t>(res);
      if (op->done_bytes < op->length_bytes) {
        self->issue(op);  // the kernel transferred part: continue with the rest
        return;
      }
      res = zero_fill ? 0 : static_cast<int>(std::min<uint64_t>(op->done_bytes, INT32_MAX));
    } else if (transfer && res == 0 && op->length_bytes > 0) {
      res = -EIO;  // end of device inside a mapped range
    }
    delete st;
    op->device_state = nullptr;
    op->done(op, res);
  }

  Loop& loop_;
  std::string name_;
  int fd_;
  int direct_fd_;
  uint64_t size_bytes_;
  uint32_t logical_block_bytes_;
  bool memory_backed_;
  std::vector<std::pair<DevOp*, int>> finished_;  // in-memory transfers to complete
};

}  // namespace

Result<std::unique_ptr<Device>> open_uring_device(Loop& loop, const std::string& path,
                                                  const UringDeviceOptions& options) {
  const int mode = options.read_only ? O_RDONLY : O_RDWR;
  int fd = ::open(path.c_str(), mode | O_CLOEXEC);
  if (fd < 0) return errno_error(fmt::format("open {}", path), errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_error(fmt::format("stat {}", path), err);
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint32_t lbs = 512;
  if (S_ISBLK(st.st_mode)) {
    int block = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0 || ::ioctl(fd, BLKSSZGET, &block) != 0) {
      int err = errno;
      ::close(fd);
      return errno_error(fmt::format("size of {}", path), err);
    }
    lbs = static_cast<uint32_t>(block);
  }
  int direct_fd = -1;
  if (options.direct_io != DirectIo::kOff) {
    direct_fd = ::open(path.c_str(), mode | O_CLOEXEC | O_DIRECT);
    if (direct_fd < 0 && options.direct_io == DirectIo::kOn) {
      int err = errno;
      ::close(fd);
      return make_error(Errc::kInvalidArgument,
                        fmt::format("{} does not support O_DIRECT ({}); use direct I/O 'auto' "
                                    "or 'off' for this device",
                                    path, std::strerror(err)));
    }
  }
  // Files in memory (tmpfs, ramfs) cannot be read without blocking through io_uring.
  struct statfs fs {};
  const bool memory_backed = S_ISREG(st.st_mode) && direct_fd < 0 && ::fstatfs(fd, &fs) == 0 &&
                             (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
  return std::unique_ptr<Device>(
      new UringDevice(loop, path, fd, direct_fd, size, lbs, memory_backed));
}

}  // namespace rsio::volmgr::io
