// Thread model: see ublk_frontend.h.
#include "ublk_frontend.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <liburing.h>
#include <linux/ublk_cmd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/log.h"

namespace rsio::rsclient {

namespace {

constexpr uint16_t kQueueDepth = 64;
constexpr uint32_t kMaxIoBytes = 1U << 20;
constexpr uint64_t kEventTag = 0xffffffffULL;

struct Device;

struct Req {
  client::Io io;  // first member: the completion finds the Req from the Io
  Device* dev = nullptr;
  uint16_t tag = 0;
};

struct Device {
  std::string name;
  uint32_t id = 0;
  int cdev = -1;
  int event_fd = -1;
  ublksrv_io_desc* descs = nullptr;
  size_t descs_bytes = 0;
  std::shared_ptr<BlockBackend> backend;
  std::vector<void*> bufs;
  std::vector<Req> reqs;
  std::thread thread;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<uint16_t, int>> done;  // GUARDED_BY(mu): (tag, result)
  std::string bdev;
  dev_t rdev = 0;

  ~Device() {
    if (descs != nullptr) ::munmap(descs, descs_bytes);
    if (cdev >= 0) ::close(cdev);
    if (event_fd >= 0) ::close(event_fd);
    for (void* b : bufs) std::free(b);
  }
};

// With IORING_SETUP_SQE128 every SQE is 128 bytes: the command payload (sqe->cmd) continues
// past the 64-byte struct. GCC sees only the struct and would flag the writes beyond it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
io_uring_sqe* cmd_sqe(io_uring* ring, int fd, uint32_t op) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // SQE128
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = op;
  return sqe;
}
#pragma GCC diagnostic pop

void queue_io_cmd(io_uring* ring, Device* d, uint32_t op, uint16_t tag, int result) {
  io_uring_sqe* sqe = cmd_sqe(ring, d->cdev, op);
  auto* c = reinterpret_cast<ublksrv_io_cmd*>(sqe->cmd);
  c->q_id = 0;
  c->tag = tag;
  c->result = result;
  c->addr = reinterpret_cast<uint64_t>(d->bufs[tag]);
  io_uring_sqe_set_data64(sqe, tag);
}

void arm_event(io_uring* ring, Device* d, uint64_t* buf) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  io_uring_prep_read(sqe, d->event_fd, buf, sizeof(*buf), 0);
  io_uring_sqe_set_data64(sqe, kEventTag);
}

// A request from the kernel, handed to the client library.
void start_request(Device* d, uint16_t tag, std::atomic<int>& in_flight) {
  const ublksrv_io_desc& iod = d->descs[tag];
  const uint8_t op = static_cast<uint8_t>(iod.op_flags & 0xff);
  const uint32_t flags = iod.op_flags >> 8;
  Req& r = d->reqs[tag];
  r.io = client::Io{};
  r.dev = d;
  r.tag = tag;
  r.io.volume = d->backend->volume_id();
  r.io.offset = iod.start_sector * 512;
  r.io.length = iod.nr_sectors * 512;
  r.io.buf = d->bufs[tag];
  r.io.fua = (flags & (UBLK_IO_F_FUA >> 8)) != 0;
  switch (op) {
    case UBLK_IO_OP_READ:
      r.io.op = wire::Opcode::kRead;
      break;
    case UBLK_IO_OP_WRITE:
      r.io.op = wire::Opcode::kWrite;
      break;
    case UBLK_IO_OP_FLUSH:
      r.io.op = wire::Opcode::kFlush;
      r.io.offset = 0;
      r.io.length = 0;
      break;
    case UBLK_IO_OP_DISCARD:
      r.io.op = wire::Opcode::kDiscard;
      break;
    case UBLK_IO_OP_WRITE_ZEROES:
      r.io.op = wire::Opcode::kWriteZeroes;
      break;
    default: {
      std::lock_guard lock(d->mu);
      d->done.emplace_back(tag, -EOPNOTSUPP);
      const uint64_t one = 1;
      (void)!::write(d->event_fd, &one, sizeof(one));
      return;
    }
  }
  if (r.io.op != wire::Opcode::kWrite && r.io.op != wire::Opcode::kWriteZeroes) r.io.fua = false;
  const uint32_t bytes = r.io.length;
  r.io.user = &in_flight;
  r.io.done = [](client::Io* io, wire::StatusCode s) {
    auto* rq = reinterpret_cast<Req*>(io);
    const int res =
        s == wire::StatusCode::kOk ? static_cast<int>(io->length) : -wire::status_errno(s);
    {
      std::lock_guard lock(rq->dev->mu);
      rq->dev->done.emplace_back(rq->tag, res);
    }
    const uint64_t one = 1;
    (void)!::write(rq->dev->event_fd, &one, sizeof(one));
  };
  (void)bytes;
  in_flight.fetch_add(1);
  d->backend->client().submit(&r.io);
}

// The queue thread of one device: fetch, execute through the client library, commit.
void run_queue(Device* d, std::promise<Status>* ready) {
  io_uring ring{};
  int rc = io_uring_queue_init(2 * kQueueDepth + 4, &ring, IORING_SETUP_SQE128);
  if (rc < 0) {
    ready->set_value(make_error(Errc::kUnavailable,
                                fmt::format("io_uring for ublk queue: {}", std::strerror(-rc))));
    return;
  }
  for (uint16_t tag = 0; tag < kQueueDepth; ++tag)
    queue_io_cmd(&ring, d, UBLK_IO_FETCH_REQ, tag, -1);
  uint64_t event_buf = 0;
  arm_event(&ring, d, &event_buf);
  io_uring_submit(&ring);
  ready->set_value(Status{});
  std::atomic<int> in_flight{0};
  int aborted = 0;
  for (;;) {
    if (d->stop && in_flight == 0) break;
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec ts{0, 200'000'000};
    rc = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, nullptr);
    if (rc < 0 && rc != -ETIME && rc != -EINTR) {
      log::error("ublk {}: queue ring: {}", d->name, std::strerror(-rc));
      break;
    }
    unsigned head = 0, seen = 0;
    std::vector<std::pair<uint64_t, int>> cqes;
    io_uring_for_each_cqe(&ring, head, cqe) {
      cqes.emplace_back(cqe->user_data, cqe->res);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
    for (auto [data, res] : cqes) {
      if (data == kEventTag) {
        std::vector<std::pair<uint16_t, int>> finished;
        {
          std::lock_guard lock(d->mu);
          finished.swap(d->done);
        }
        for (auto [tag, result] : finished) {
          in_flight.fetch_sub(1);
          if (!d->stop) queue_io_cmd(&ring, d, UBLK_IO_COMMIT_AND_FETCH_REQ, tag, result);
        }
        arm_event(&ring, d, &event_buf);
        continue;
      }
      const auto tag = static_cast<uint16_t>(data);
      if (res == UBLK_IO_RES_OK) {
        if (d->stop) continue;
        start_request(d, tag, in_flight);
      } else if (res == UBLK_IO_RES_ABORT) {
        ++aborted;  // the device is going away
      } else {
        log::warn("ublk {}: tag {}: command failed: {}", d->name, tag, std::strerror(-res));
      }
    }
    if (aborted == kQueueDepth && in_flight == 0) break;
  }
  io_uring_queue_exit(&ring);  // cancels what is still queued
}

}  // namespace

struct UblkFrontend::Impl {
  int ctrl = -1;
  io_uring ring{};
  std::mutex ctrl_mu;
  mutable std::mutex mu;
  std::map<std::string, std::unique_ptr<Device>> devices;  // GUARDED_BY(mu)

  ~Impl() {
    if (ctrl >= 0) {
      io_uring_queue_exit(&ring);
      ::close(ctrl);
    }
  }

  // One control command; returns the CQE's result (0 or -errno).
  int control(uint32_t op, uint32_t dev_id, void* addr, uint16_t len, uint64_t data0 = 0) {
    std::lock_guard lock(ctrl_mu);
    io_uring_sqe* sqe = cmd_sqe(&ring, ctrl, op);
    auto* c = reinterpret_cast<ublksrv_ctrl_cmd*>(sqe->cmd);
    c->dev_id = dev_id;
    c->queue_id = 0xffff;
    c->addr = reinterpret_cast<uint64_t>(addr);
    c->len = len;
    c->data[0] = data0;
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0) return rc;
    rc = io_uring_wait_cqe(&ring, &cqe);
    if (rc < 0) return rc;
    const int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res;
  }
};

namespace {

Status stop_device(UblkFrontend::Impl& impl, Device& d) {
  // STOP_DEV fails the fetches (UBLK_IO_RES_ABORT); the queue thread ends once its requests in
  // the client library are back. DEL_DEV needs the character device closed first.
  const int rc = impl.control(UBLK_CMD_STOP_DEV, d.id, nullptr, 0);
  if (rc < 0) log::warn("ublk {}: STOP_DEV: {}", d.name, std::strerror(-rc));
  d.stop = true;
  const uint64_t one = 1;
  (void)!::write(d.event_fd, &one, sizeof(one));
  if (d.thread.joinable()) d.thread.join();
  if (d.descs != nullptr) ::munmap(d.descs, d.descs_bytes);
  d.descs = nullptr;
  if (d.cdev >= 0) ::close(d.cdev);
  d.cdev = -1;
  const int del = impl.control(UBLK_CMD_DEL_DEV, d.id, nullptr, 0);
  if (del < 0)
    return make_error(Errc::kIo, fmt::format("ublk DEL_DEV {}: {}", d.id, std::strerror(-del)));
  return {};
}

}  // namespace

UblkFrontend::UblkFrontend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<UblkFrontend>> UblkFrontend::start() {
  auto impl = std::make_unique<Impl>();
  impl->ctrl = ::open("/dev/ublk-control", O_RDWR | O_CLOEXEC);
  if (impl->ctrl < 0)
    return make_error(Errc::kUnavailable,
                      fmt::format("ublk is not available (/dev/ublk-control: {}); load it with "
                                  "`modprobe ublk_drv` (Linux 6.0 or later, CONFIG_BLK_DEV_UBLK)",
                                  std::strerror(errno)));
  const int rc = io_uring_queue_init(8, &impl->ring, IORING_SETUP_SQE128);
  if (rc < 0) {
    ::close(impl->ctrl);
    impl->ctrl = -1;
    return make_error(Errc::kUnavailable,
                      fmt::format("io_uring with 128-byte SQEs: {}", std::strerror(-rc)));
  }
  log::info("ublk frontend ready (/dev/ublk-control)");
  return std::unique_ptr<UblkFrontend>(new UblkFrontend(std::move(impl)));
}

UblkFrontend::~UblkFrontend() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [n, d] : impl_->devices) names.push_back(n);
  }
  for (const auto& n : names) (void)detach(n, true);
}

std::string UblkFrontend::handle(const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->devices.find(name);
  return it == impl_->devices.end() ? "" : fmt::format("ublk:{}", it->second->id);
}

std::vector<std::string> UblkFrontend::release_all() {
  std::vector<std::unique_ptr<Device>> devs;
  std::vector<std::string> names;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [n, d] : impl_->devices) {
      names.push_back(n);
      devs.push_back(std::move(d));
    }
    impl_->devices.clear();
  }
  for (auto& d : devs) {
    // The queue thread leaves fetched requests uncommitted: the kernel re-issues them to the
    // next rsclientd (UBLK_F_USER_RECOVERY_REISSUE).
    d->stop = true;
    const uint64_t one = 1;
    (void)!::write(d->event_fd, &one, sizeof(one));
    if (d->thread.joinable()) d->thread.join();
  }
  return names;  // ~Device closes the character device; the block device stays
}

Result<std::string> UblkFrontend::attach(const std::string& name,
                                         std::shared_ptr<BlockBackend> backend,
                                         const std::string& resume) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->devices.count(name) > 0)
      return make_error(Errc::kAlreadyExists, fmt::format("{} is attached already", name));
  }
  auto d = std::make_unique<Device>();
  d->name = name;
  d->backend = std::move(backend);
  bool recovering = false;
  int rc = 0;
  if (resume.rfind("ublk:", 0) == 0) {
    const auto id = static_cast<uint32_t>(std::strtoul(resume.c_str() + 5, nullptr, 10));
    ublksrv_ctrl_dev_info info{};
    rc = impl_->control(UBLK_CMD_GET_DEV_INFO, id, &info, sizeof(info));
    if (rc == 0 && info.state == UBLK_S_DEV_QUIESCED &&
        impl_->control(UBLK_CMD_START_USER_RECOVERY, id, nullptr, 0) == 0) {
      d->id = id;
      recovering = true;
      log::info("ublk {}: taking over /dev/ublkb{} from the previous rsclientd", name, id);
    } else if (rc == 0) {
      // Not recoverable (stopped, or still served by someone): start afresh.
      log::warn("ublk {}: /dev/ublkb{} is in state {}, not recoverable; adding a new device", name,
                id, info.state);
      impl_->control(UBLK_CMD_STOP_DEV, id, nullptr, 0);
      impl_->control(UBLK_CMD_DEL_DEV, id, nullptr, 0);
    }
  }
  auto fail = [&](Error e) -> Result<std::string> {
    impl_->control(UBLK_CMD_STOP_DEV, d->id, nullptr, 0);
    impl_->control(UBLK_CMD_DEL_DEV, d->id, nullptr, 0);
    return e;
  };
  if (!recovering) {
    ublksrv_ctrl_dev_info info{};
    info.nr_hw_queues = 1;
    info.queue_depth = kQueueDepth;
    info.max_io_buf_bytes = kMaxIoBytes;
    info.dev_id = UINT32_MAX;  // the kernel picks the number
    info.ublksrv_pid = ::getpid();
    // The device survives a restart of rsclientd: its requests wait and are re-issued.
    info.flags = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    rc = impl_->control(UBLK_CMD_ADD_DEV, UINT32_MAX, &info, sizeof(info));
    if (rc < 0)
      return make_error(Errc::kIo,
                        fmt::format("ublk ADD_DEV for {}: {}", name, std::strerror(-rc)));
    d->id = info.dev_id;
    const uint64_t size = d->backend->size_bytes();
    ublk_params params{};
    params.len = sizeof(params);
    params.types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
    params.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA |
                         (d->backend->read_only() ? UBLK_ATTR_READ_ONLY : 0);
    params.basic.logical_bs_shift = d->backend->block_size_bytes() == 4096 ? 12 : 9;
    params.basic.physical_bs_shift = 12;
    params.basic.io_opt_shift = 12;
    params.basic.io_min_shift = params.basic.logical_bs_shift;
    params.basic.max_sectors = kMaxIoBytes >> 9;
    params.basic.dev_sectors = size >> 9;
    params.discard.discard_granularity = 4096;
    params.discard.max_discard_sectors = kMaxIoBytes >> 9;
    params.discard.max_write_zeroes_sectors = kMaxIoBytes >> 9;
    params.discard.max_discard_segments = 1;
    rc = impl_->control(UBLK_CMD_SET_PARAMS, d->id, &params, sizeof(params));
    if (rc < 0)
      return fail(make_error(Errc::kIo, fmt::format("ublk SET_PARAMS: {}", std::strerror(-rc))));
  }
  // The character device appears through devtmpfs/udev.
  const std::string cdev = fmt::format("/dev/ublkc{}", d->id);
  for (int i = 0; i < 200 && d->cdev < 0; ++i) {
    d->cdev = ::open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    if (d->cdev < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (d->cdev < 0) return fail(errno_error(fmt::format("open {}", cdev), errno));
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  d->descs_bytes = (kQueueDepth * sizeof(ublksrv_io_desc) + page - 1) / page * page;
  void* m = ::mmap(nullptr, d->descs_bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, d->cdev,
                   UBLKSRV_CMD_BUF_OFFSET);
  if (m == MAP_FAILED) return fail(errno_error("mmap of the ublk request descriptors", errno));
  d->descs = static_cast<ublksrv_io_desc*>(m);
  d->event_fd = ::eventfd(0, EFD_CLOEXEC);
  d->reqs.resize(kQueueDepth);
  for (uint16_t t = 0; t < kQueueDepth; ++t)
    d->bufs.push_back(std::aligned_alloc(4096, kMaxIoBytes));
  std::promise<Status> ready;
  Device* raw = d.get();
  d->thread = std::thread([raw, &ready] { run_queue(raw, &ready); });
  if (Status st = ready.get_future().get(); !st) {
    d->thread.join();
    return fail(st.error());
  }
  // START_DEV (END_USER_RECOVERY when taking over) returns once every tag has been fetched.
  rc = impl_->control(recovering ? UBLK_CMD_END_USER_RECOVERY : UBLK_CMD_START_DEV, d->id, nullptr,
                      0, static_cast<uint64_t>(::getpid()));
  if (rc < 0) {
    d->stop = true;
    d->thread.join();
    return fail(make_error(
        Errc::kIo, fmt::format("ublk {}: {}", recovering ? "END_USER_RECOVERY" : "START_DEV",
                               std::strerror(-rc))));
  }
  d->bdev = fmt::format("/dev/ublkb{}", d->id);
  struct stat st {};
  for (int i = 0; i < 200 && ::stat(d->bdev.c_str(), &st) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  d->rdev = st.st_rdev;
  if (d->rdev == 0) {
    (void)stop_device(*impl_, *d);
    return make_error(Errc::kIo, fmt::format("{} did not appear", d->bdev));
  }
  const std::string bdev = d->bdev;
  std::lock_guard lock(impl_->mu);
  impl_->devices[name] = std::move(d);
  return bdev;
}

Status UblkFrontend::detach(const std::string& name, bool force) {
  std::unique_ptr<Device> d;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->devices.find(name);
    if (it == impl_->devices.end())
      return make_error(Errc::kNotFound, fmt::format("{} is not attached", name));
    if (!force && block_device_busy(it->second->bdev))
      return make_error(Errc::kInUse,
                        fmt::format("{} ({}) is in use (mounted?); unmount it first, or detach "
                                    "with --force (its users then get I/O errors)",
                                    name, it->second->bdev));
    d = std::move(it->second);
    impl_->devices.erase(it);
  }
  return stop_device(*impl_, *d);
}

Status UblkFrontend::resized(const std::string& name) {
  return make_error(Errc::kUnavailable,
                    fmt::format("{}: ublk in this kernel cannot change a device's size; detach "
                                "and attach again to see the new size",
                                name));
}

Result<dev_t> UblkFrontend::device_number(const std::string& name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->devices.find(name);
  if (it == impl_->devices.end())
    return make_error(Errc::kNotFound, fmt::format("{} is not attached", name));
  return it->second->rdev;
}

}  // namespace rsio::rsclient
