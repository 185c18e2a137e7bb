// The QMP commands of ioplane-storage-daemon: qemu-storage-daemon's names and
// argument shapes (QEMU 7.2 schema), each turned into a StorageDaemon
// operation or query. docs/QMP.md lists them and where ioplane differs.
#pragma once

#include "daemon/storage_daemon.h"

namespace ioplane::daemon {

// Thread contract: main thread, under the BQL (at startup, before monitors).
void register_qmp_commands(StorageDaemon& daemon);
// The block job commands (job_commands.cc). Thread contract: as above.
void register_job_commands(StorageDaemon& daemon);

}  // namespace ioplane::daemon
