module safefs

go 1.24.0

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sys v0.41.0
)

require github.com/coreos/go-systemd/v22 v22.7.0

require github.com/seccomp/libseccomp-golang v0.11.1
