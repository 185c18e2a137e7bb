/* blkzero: zeroes a byte range of a block device from inside the test
 * guest, which has only busybox (no util-linux blkdiscard -z / fallocate -p).
 *   blkzero zeroout DEV OFFSET LEN   BLKZEROOUT: WRITE_ZEROES without unmap
 *   blkzero punch DEV OFFSET LEN     fallocate(PUNCH_HOLE): WRITE_ZEROES that may unmap
 * Built static on the host by tests/guest/vhost_user_blk_guest.sh. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int main(int argc, char** argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: blkzero zeroout|punch DEV OFFSET LEN\n");
        return 2;
    }
    int fd = open(argv[2], O_RDWR);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    uint64_t range[2] = {strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0)};
    int r;
    if (strcmp(argv[1], "zeroout") == 0)
        r = ioctl(fd, BLKZEROOUT, range);
    else
        r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)range[0], (off_t)range[1]);
    if (r != 0) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
