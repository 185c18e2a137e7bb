#include "security_model.h"

#include <sys/xattr.h>

#include <cerrno>
#include <string>

#include "host_fs.h"

namespace ioplane::fs9p {

namespace {

constexpr const char* kUid = "user.virtfs.uid";
constexpr const char* kGid = "user.virtfs.gid";
constexpr const char* kMode = "user.virtfs.mode";
constexpr const char* kRdev = "user.virtfs.rdev";
constexpr std::string_view kPrefix = "user.virtfs.";

// QEMU stores these as host-endian binary values of their C types (uid_t,
// gid_t, mode_t, dev_t); so do we, so that a share moves between the two.
template <class T>
int store(const std::string& path, const char* name, T value) {
    return ::setxattr(path.c_str(), name, &value, sizeof value, 0) == 0 ? 0 : -errno;
}

template <class T>
std::optional<T> load(const std::string& path, const char* name) {
    T value;
    if (::getxattr(path.c_str(), name, &value, sizeof value) != ssize_t(sizeof value)) return std::nullopt;
    return value;
}

}  // namespace

std::optional<SecurityModel> parse_security_model(std::string_view name) {
    if (name == "passthrough") return SecurityModel::passthrough;
    if (name == "mapped-xattr" || name == "mapped") return SecurityModel::mapped_xattr;
    if (name == "none") return SecurityModel::none;
    return std::nullopt;
}

const char* security_model_name(SecurityModel m) {
    switch (m) {
        case SecurityModel::passthrough: return "passthrough";
        case SecurityModel::mapped_xattr: return "mapped-xattr";
        case SecurityModel::none: return "none";
    }
    return "?";
}

int store_mapped(int fd, const MappedAttrs& a) {
    const std::string p = proc_path(fd);
    if (a.uid)
        if (int r = store<uid_t>(p, kUid, *a.uid); r < 0) return r;
    if (a.gid)
        if (int r = store<gid_t>(p, kGid, *a.gid); r < 0) return r;
    if (a.mode)
        if (int r = store<mode_t>(p, kMode, *a.mode); r < 0) return r;
    if (a.rdev)
        if (int r = store<dev_t>(p, kRdev, *a.rdev); r < 0) return r;
    return 0;
}

bool has_mapped_mode(int fd) { return load<mode_t>(proc_path(fd), kMode).has_value(); }

void apply_mapped(int fd, struct stat& st) {
    const std::string p = proc_path(fd);
    if (auto v = load<uid_t>(p, kUid)) st.st_uid = *v;
    if (auto v = load<gid_t>(p, kGid)) st.st_gid = *v;
    if (auto v = load<mode_t>(p, kMode)) st.st_mode = *v;
    if (auto v = load<dev_t>(p, kRdev)) st.st_rdev = *v;
}

int stat_for_client(int fd, struct stat& st, SecurityModel model) {
    if (int r = stat_fd(fd, st); r < 0) return r;
    if (model == SecurityModel::mapped_xattr) apply_mapped(fd, st);
    return 0;
}

bool is_mapped_xattr(std::string_view name) { return name.starts_with(kPrefix); }

}  // namespace ioplane::fs9p
