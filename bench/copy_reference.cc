// The jobs benchmark's floor (bench/jobs_bench.py): what any copy job must
// at least do, with nothing else. It copies the data extents of a raw file
// (SEEK_DATA/SEEK_HOLE) to the same offsets of another, one chunk at a time
// with pread/pwrite through one buffer in one thread, then fdatasyncs the
// copy. No image format, no event loop, no second thread: a lower bound of
// the CPU time a copy through user space takes on this machine.
//
//   copy_reference SRC DST [CHUNK]    (CHUNK defaults to 1 MiB)
// Prints "SECONDS CPU_SECONDS BYTES" on stdout.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace {

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    auto secs = [](const timeval& t) { return double(t.tv_sec) + double(t.tv_usec) / 1e6; };
    return secs(u.ru_utime) + secs(u.ru_stime);
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "copy_reference: %s: %s\n", what, std::strerror(errno));
    std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: copy_reference SRC DST [CHUNK]\n");
        return 2;
    }
    const size_t chunk = argc > 3 ? std::strtoull(argv[3], nullptr, 0) : 1 << 20;
    const int in = open(argv[1], O_RDONLY);
    if (in < 0) die(argv[1]);
    const int out = open(argv[2], O_WRONLY);
    if (out < 0) die(argv[2]);
    const off_t end = lseek(in, 0, SEEK_END);
    std::unique_ptr<char[]> buf(new char[chunk]);
    const auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = cpu_seconds();
    uint64_t copied = 0;
    for (off_t pos = 0; pos < end;) {
        const off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) break;  // only a hole is left
        if (data < 0) die("SEEK_DATA");
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) die("SEEK_HOLE");
        for (off_t off = data; off < hole;) {
            const size_t n = std::min<off_t>(chunk, hole - off);
            const ssize_t r = pread(in, buf.get(), n, off);
            if (r <= 0) die("pread");
            if (pwrite(out, buf.get(), r, off) != r) die("pwrite");
            off += r;
            copied += r;
        }
        pos = hole;
    }
    if (fdatasync(out) != 0) die("fdatasync");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%.4f %.4f %llu\n", secs, cpu_seconds() - cpu0, static_cast<unsigned long long>(copied));
    return 0;
}
