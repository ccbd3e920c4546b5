// The ublk frontend: each attached volume is a ublk block device (/dev/ublkbN) driven through
// the kernel's ublk UAPI with liburing: control commands on /dev/ublk-control (ADD_DEV,
// SET_PARAMS, START_DEV, STOP_DEV, DEL_DEV) and, per device, one queue thread with its own
// ring that fetches requests by tag (FETCH_REQ), hands each to the client library and
// commits its result with the next fetch (COMMIT_AND_FETCH_REQ).
//
// Thread model: attach/detach/resized run on the caller's thread (rsclientd's worker) and use
// the control ring under a mutex. Each device's queue thread owns its ring; completions from
// the client library's thread come back through a mutex-guarded list and an eventfd the ring
// reads.
#pragma once

#include <memory>
#include <string>

#include "frontend.h"

namespace rsio::rsclient {

class UblkFrontend final : public Frontend {
 public:
  // Errors: kUnavailable when /dev/ublk-control is missing or unusable, saying what to load.
  static Result<std::unique_ptr<UblkFrontend>> start();
  ~UblkFrontend() override;

  std::string kind() const override { return "ublk"; }
  // With `resume` ("ublk:N" from handle()) takes over device N left by a previous rsclientd
  // (user recovery): requests that waited in the kernel meanwhile are served then.
  Result<std::string> attach(const std::string& name, std::shared_ptr<BlockBackend> backend,
                             const std::string& resume = "") override;
  std::string handle(const std::string& name) const override;
  // Stops serving every device without deleting it: with user recovery the kernel keeps each
  // one and queues its requests until the next rsclientd takes it over.
  std::vector<std::string> release_all() override;
  Status detach(const std::string& name, bool force) override;
  // ublk in Linux 6.12 cannot change a live device's size: reported as kUnavailable.
  Status resized(const std::string& name) override;
  Result<dev_t> device_number(const std::string& name) const override;

  struct Impl;

 private:
  explicit UblkFrontend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsio::rsclient
