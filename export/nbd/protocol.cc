#include "nbd/protocol.h"
