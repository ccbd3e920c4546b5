/* The fio engine's view of the RSIO client library: a small C interface, because fio's
 * headers are C. One handle per fio job thread. */
#ifndef RSIO_FIO_BRIDGE_H
#define RSIO_FIO_BRIDGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rsio_fio rsio_fio;

enum rsio_fio_op { RSIO_FIO_READ, RSIO_FIO_WRITE, RSIO_FIO_TRIM, RSIO_FIO_SYNC };

/* Connects (servers: comma-separated HOST:PORT[@LOCAL]) and opens the volume. On failure
 * returns NULL with a message in err. */
/* caller_driven: the job thread drives the client library (no I/O thread; best at low
 * queue depth), else the library's own thread does the network I/O. */
rsio_fio* rsio_fio_open(const char* servers, const char* node, const char* keyfile,
                        const char* volume, int read_only, int caller_driven,
                        uint64_t* size_bytes, char* err, size_t errlen);
/* Queues a request; it is sent at the next rsio_fio_commit(). */
void rsio_fio_queue(rsio_fio* h, void* cookie, enum rsio_fio_op op, void* buf, uint64_t len,
                    uint64_t offset);
void rsio_fio_commit(rsio_fio* h);
/* Waits until at least `min` requests completed (or the timeout passed) and returns how many
 * are ready for rsio_fio_event(), at most `max`. */
int rsio_fio_getevents(rsio_fio* h, unsigned min, unsigned max, const struct timespec* t);
/* The cookie of the i-th ready request; *error is 0 or an errno value. */
void* rsio_fio_event(rsio_fio* h, int i, int* error);
void rsio_fio_close(rsio_fio* h);

#ifdef __cplusplus
}
#endif

#endif
