// 9P security models, as QEMU's virtfs names them (`security-model=`):
//
//  - passthrough: the client's owners and modes are the host files' own
//    (chown, chmod, setuid bits, fifos): right for a share of the client's
//    own files, with the daemon running as a user who may do all that.
//  - mapped-xattr (alias `mapped`): host objects are created with the
//    daemon's ownership and modes 0600 (files) and 0700 (directories), never
//    setuid or setgid; what the client asks for (owner, group, mode with its
//    file type, device numbers) is kept in extended attributes of the host
//    object, QEMU's `user.virtfs.{uid,gid,mode,rdev}`, and reported back.
//    Symlinks and device nodes are regular files on the host (a symlink's
//    target is its content). The client cannot see or set those attributes.
//    The model for a daemon running as root.
//  - none: as passthrough, but failures to change ownership are ignored.
//
// Thread contract: functions, pure or synchronous system calls for a
// worker thread (or any thread); errors are negative errno values.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace ioplane::fs9p {

enum class SecurityModel { passthrough, mapped_xattr, none };

std::optional<SecurityModel> parse_security_model(std::string_view name);
const char* security_model_name(SecurityModel m);

// What mapped-xattr keeps for an object.
struct MappedAttrs {
    std::optional<uint32_t> uid, gid, mode;  // mode includes the file type bits
    std::optional<uint64_t> rdev;
};

// Stores the attributes set in `a` on the object of O_PATH fd `fd`.
int store_mapped(int fd, const MappedAttrs& a);
// Whether a mode is stored for `fd`'s object (it was made under the model).
bool has_mapped_mode(int fd);
// Overlays the stored attributes of `fd`'s object on `st` (those not stored
// keep the host's values).
void apply_mapped(int fd, struct stat& st);
// fstat of `fd`'s object as the client sees it under `model`, or -errno.
int stat_for_client(int fd, struct stat& st, SecurityModel model);
// Whether `name` is one of the attributes mapped-xattr keeps for itself.
bool is_mapped_xattr(std::string_view name);

// The host mode of a new object under mapped-xattr.
inline constexpr mode_t kMappedFileMode = 0600;
inline constexpr mode_t kMappedDirMode = 0700;

}  // namespace ioplane::fs9p
