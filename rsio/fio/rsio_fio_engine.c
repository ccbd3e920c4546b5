/* fio external engine for RSIO: ioengine=external:/path/librsio_fio.so
 *
 *   server=HOST:PORT[@LOCAL][,HOST:PORT...]  one entry per path (trunking, failover)
 *   node=NAME  keyfile=PATH  volume=NAME
 *
 * Requests queue in fio's thread and go to the client library in one batch per commit;
 * completions are collected in getevents. Built against fio's own headers (see
 * docs/client-library.md for how the build finds them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fio.h"
#include "optgroup.h"

#include "bridge.h"

struct rsio_options {
  void* pad; /* fio treats an option offset of 0 as unset */
  char* server;
  char* node;
  char* keyfile;
  char* volume;
  char* mode;
};

static struct fio_option options[] = {
    {
        .name = "server",
        .lname = "RSIO server paths",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct rsio_options, server),
        .help = "HOST:PORT[@LOCAL_ADDRESS], comma-separated for several paths",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "node",
        .lname = "RSIO node name",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct rsio_options, node),
        .help = "Node name registered on the server (rsadmin -c)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "keyfile",
        .lname = "RSIO node key file",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct rsio_options, keyfile),
        .help = "File whose first line is the node key",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "volume",
        .lname = "RSIO volume",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct rsio_options, volume),
        .help = "Volume name (granted to the node)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = "mode",
        .lname = "RSIO client threading",
        .type = FIO_OPT_STR_STORE,
        .off1 = offsetof(struct rsio_options, mode),
        .help = "auto (default), inline (the job thread does the network I/O) or thread (the "
                "client library's own thread does)",
        .category = FIO_OPT_C_ENGINE,
        .group = FIO_OPT_G_INVALID,
    },
    {
        .name = NULL,
    },
};

struct rsio_data {
  rsio_fio* h;
  struct io_u** events;
};

/* At one or two requests in flight there is nothing to overlap: the job thread does the
 * network I/O itself and saves two thread switches per request. Deeper queues gain from
 * the library's own thread batching sends and receives next to fio's work. */
static int caller_driven(struct thread_data* td) {
  struct rsio_options* o = td->eo;
  if (o->mode && strcmp(o->mode, "inline") == 0) return 1;
  if (o->mode && strcmp(o->mode, "thread") == 0) return 0;
  return td->o.iodepth <= 2;
}

static int connect_volume(struct thread_data* td, rsio_fio** out, uint64_t* size) {
  struct rsio_options* o = td->eo;
  char err[512];
  if (o->mode && strcmp(o->mode, "auto") != 0 && strcmp(o->mode, "inline") != 0 &&
      strcmp(o->mode, "thread") != 0) {
    log_err("fio: rsio: mode must be auto, inline or thread\n");
    return 1;
  }
  *out = rsio_fio_open(o->server, o->node, o->keyfile, o->volume, td_write(td) ? 0 : 1,
                       caller_driven(td), size, err, sizeof(err));
  if (*out == NULL) {
    log_err("fio: rsio: %s\n", err);
    return 1;
  }
  return 0;
}

static int rsio_setup(struct thread_data* td) {
  struct fio_file* f;
  rsio_fio* h;
  uint64_t size = 0;
  if (!td->files_index) {
    add_file(td, td->o.filename ? td->o.filename : "rsio", 0, 0);
    td->o.nr_files = td->o.nr_files ? : 1;
    td->o.open_files++;
  }
  f = td->files[0];
  /* The size comes from the server; the job's own threads connect again in init. */
  if (connect_volume(td, &h, &size)) return 1;
  rsio_fio_close(h);
  f->real_file_size = size;
  fio_file_set_size_known(f);
  return 0;
}

static int rsio_init(struct thread_data* td) {
  struct rsio_data* d = calloc(1, sizeof(*d));
  uint64_t size = 0;
  if (d == NULL) return 1;
  d->events = calloc(td->o.iodepth + 1, sizeof(struct io_u*));
  td->io_ops_data = d;
  return connect_volume(td, &d->h, &size);
}

static void rsio_cleanup(struct thread_data* td) {
  struct rsio_data* d = td->io_ops_data;
  if (d == NULL) return;
  if (d->h) rsio_fio_close(d->h);
  free(d->events);
  free(d);
  td->io_ops_data = NULL;
}

static enum fio_q_status rsio_queue(struct thread_data* td, struct io_u* io_u) {
  struct rsio_data* d = td->io_ops_data;
  enum rsio_fio_op op;
  fio_ro_check(td, io_u);
  switch (io_u->ddir) {
    case DDIR_READ: op = RSIO_FIO_READ; break;
    case DDIR_WRITE: op = RSIO_FIO_WRITE; break;
    case DDIR_TRIM: op = RSIO_FIO_TRIM; break;
    case DDIR_SYNC:
    case DDIR_DATASYNC: op = RSIO_FIO_SYNC; break;
    default: io_u->error = EINVAL; return FIO_Q_COMPLETED;
  }
  rsio_fio_queue(d->h, io_u, op, io_u->xfer_buf, io_u->xfer_buflen, io_u->offset);
  return FIO_Q_QUEUED;
}

static int rsio_commit(struct thread_data* td) {
  struct rsio_data* d = td->io_ops_data;
  rsio_fio_commit(d->h);
  return 0;
}

static int rsio_getevents(struct thread_data* td, unsigned int min, unsigned int max,
                          const struct timespec* t) {
  struct rsio_data* d = td->io_ops_data;
  int n = rsio_fio_getevents(d->h, min, max, t);
  int i;
  for (i = 0; i < n; ++i) {
    int error = 0;
    struct io_u* io_u = rsio_fio_event(d->h, i, &error);
    io_u->error = error;
    d->events[i] = io_u;
  }
  return n;
}

static struct io_u* rsio_event(struct thread_data* td, int event) {
  struct rsio_data* d = td->io_ops_data;
  return d->events[event];
}

static int rsio_open_file(struct thread_data* td, struct fio_file* f) { return 0; }
static int rsio_close_file(struct thread_data* td, struct fio_file* f) { return 0; }

struct ioengine_ops ioengine = {
    .name = "rsio",
    .version = FIO_IOOPS_VERSION,
    .flags = FIO_DISKLESSIO | FIO_NOEXTEND | FIO_NODISKUTIL,
    .setup = rsio_setup,
    .init = rsio_init,
    .cleanup = rsio_cleanup,
    .queue = rsio_queue,
    .commit = rsio_commit,
    .getevents = rsio_getevents,
    .event = rsio_event,
    .open_file = rsio_open_file,
    .close_file = rsio_close_file,
    .options = options,
    .option_struct_size = sizeof(struct rsio_options),
};
