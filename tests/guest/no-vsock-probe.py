# Prints: vsock HOW io_uring HOW, for socket(AF_VSOCK) and io_uring_setup:
# opened / ring, or the errno's name. Inside a container both must be EPERM
# (the agent's seccomp filter for apps, security review F11). Used by
# guest-agent/tests/container_hardening.rs and tests/guest/pod-e2e.sh, which
# pass it to python3 -c in double quotes: no double quote, dollar or backtick.
import ctypes, errno, socket
try:
    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close(); v = 'opened'
except OSError as e:
    v = errno.errorcode.get(e.errno, str(e.errno))
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(425, 1, ctypes.create_string_buffer(120))
u = 'ring' if r >= 0 else errno.errorcode.get(ctypes.get_errno(), '?')
print('vsock', v, 'io_uring', u)
