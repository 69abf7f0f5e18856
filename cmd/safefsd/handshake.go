package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"safefs/internal/fdpass"
	"safefs/internal/fusefs"
	"safefs/internal/iomap/abi"
	"safefs/internal/sandbox"
)

// host is what the daemon's side of the exchange does to the system
// besides talking on the connection: the steps that a test of the
// protocol code replaces, since they confine the process, read a
// filesystem or answer a kernel.
type host struct {
	// peerUID returns the uid of the process at the other end of conn.
	peerUID func(conn *fdpass.Conn) (uint32, error)
	// confine confines the daemon before it reads the filesystem.
	confine func() error
	// open opens the filesystem on dev (named src in messages); direct,
	// if not nil, is the same device opened with O_DIRECT.
	open func(src string, dev, direct *os.File, noRecovery bool) (*opened, error)
	// start answers the kernel's INIT on fuseFD, which it owns from
	// then on, and returns the server, ready to serve until unmount.
	start func(fuseFD int, o *opened, block bool, src string, debug bool) (server, error)
}

// server serves a mount until the kernel ends the connection.
type server interface{ Serve() error }

// system is the daemon's real host.
var system = host{peerUID: peerUID, confine: confine, open: openFilesystem, start: startServer}

// serveConn runs one mount over the control connection conn, as the
// helper's peer: receive the Hello, ask for the source, check the
// filesystem, answer with mount parameters or a reason, receive /dev/fuse,
// answer INIT, report Ready, then serve until unmount.
//
// Every refusal goes back to mount.safe as a message for a person, and is
// logged here too.
func serveConn(conn *fdpass.Conn, debugFUSE bool) int { return system.serveConn(conn, debugFUSE) }

func (h host) serveConn(conn *fdpass.Conn, debugFUSE bool) int {
	defer conn.Close()
	refuse := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		log.Print(msg)
		conn.Send(&fdpass.Error{Message: msg})
		return exitFailure
	}
	// Only root may mount, for now: a user's mount requests will need a
	// policy (which devices, which mount points) before they are served.
	if uid, err := h.peerUID(conn); err != nil {
		log.Printf("control connection: %v", err)
		return exitFailure
	} else if uid != 0 {
		return refuse("only root may mount through safefsd (the request came from uid %d)", uid)
	}
	m, _, err := conn.Expect(fdpass.THello)
	if err != nil {
		log.Printf("control connection: %v", err)
		return exitFailure
	}
	hello := m.(*fdpass.Hello)
	src := hello.Source
	if err := conn.Send(&fdpass.FileRequest{ID: 1, Role: fdpass.RoleSource}); err != nil {
		log.Printf("%s: control connection: %v", src, err)
		return exitFailure
	}
	m, files, err := conn.Expect(fdpass.TFileReply)
	if err != nil {
		log.Printf("%s: control connection: %v", src, err)
		return exitFailure
	}
	reply := m.(*fdpass.FileReply)
	if reply.Error != "" {
		log.Printf("%s: mount.safe could not open it: %s", src, reply.Error)
		return exitFailure
	}
	if reply.ID != 1 {
		for _, f := range files {
			f.Close()
		}
		log.Printf("%s: control connection: a reply to file request %d, not 1", src, reply.ID)
		return exitFailure
	}
	dev := files[0]
	defer dev.Close()
	var direct *os.File
	if reply.Block {
		if direct, err = requestDirect(conn, src); err != nil {
			log.Printf("%s: control connection: %v", src, err)
			return exitFailure
		}
		if direct != nil {
			defer direct.Close()
		}
	}
	// Everything the daemon needs from now on is an open descriptor:
	// confine it before it reads a single byte of the filesystem.
	if err := h.confine(); err != nil {
		return refuse("%s: %v", src, err)
	}
	o, err := h.open(src, dev, direct, slices.Contains(hello.Options, "norecovery"))
	if err != nil {
		return refuse("%v", err)
	}
	if err := conn.Send(&fdpass.MountParams{
		Subtype:   "ext4",
		ReadOnly:  true,
		MaxRead:   fusefs.MaxRequest,
		BlockSize: o.fsys.BlockSize(),
		Warnings:  o.warnings,
	}); err != nil {
		log.Printf("%s: control connection: %v", src, err)
		return exitFailure
	}
	m, files, err = conn.Expect(fdpass.TFuseDevice)
	if err != nil {
		// A refusal from mount.safe (the device is busy, ...) or a
		// Goodbye after -f: nothing to serve.
		var pe *fdpass.PeerError
		if errors.As(err, &pe) {
			log.Printf("%s: mount.safe gave up: %s", src, pe.Message)
		}
		return exitFailure
	}
	fuse := files[0]
	// The server owns the descriptor from here: detach it from the
	// *os.File so that closing or collecting that does not close it.
	fuseFD, err := dupFD(fuse)
	fuse.Close()
	if err != nil {
		return refuse("%s: %v", src, err)
	}
	srv, err := h.start(fuseFD, o, reply.Block, src, debugFUSE)
	if err != nil {
		return refuse("%s: %v", src, err)
	}
	if err := conn.Send(&fdpass.Ready{}); err != nil {
		log.Printf("%s: control connection: %v", src, err)
	}
	// mount.safe says goodbye (or just exits) once the mount is attached;
	// nothing more is expected on the connection.
	go func() {
		if _, files, err := conn.Recv(); err == nil {
			for _, f := range files {
				f.Close()
			}
		}
		conn.Close()
	}()
	if err := srv.Serve(); err != nil {
		log.Printf("%s: %v", src, err)
		return exitFailure
	}
	return 0
}

// requestDirect asks mount.safe for the source block device opened again
// with O_DIRECT, for bulk data reads (fusefs.BulkDevice). A refusal is
// not an error: the daemon then reads everything through the page cache.
func requestDirect(conn *fdpass.Conn, src string) (*os.File, error) {
	if err := conn.Send(&fdpass.FileRequest{ID: 2, Role: fdpass.RoleSource, Direct: true}); err != nil {
		return nil, err
	}
	m, files, err := conn.Expect(fdpass.TFileReply)
	if err != nil {
		return nil, err
	}
	if r := m.(*fdpass.FileReply); r.Error != "" {
		log.Printf("%s: reading without O_DIRECT: %s", src, r.Error)
		return nil, nil
	}
	return files[0], nil
}

// confine confines the daemon (internal/sandbox), then runs afterConfine.
func confine() error {
	if _, err := sandbox.Confine(); err != nil {
		return err
	}
	return afterConfine()
}

// startServer answers INIT on fuseFD and returns the server for o.
func startServer(fuseFD int, o *opened, block bool, src string, debug bool) (server, error) {
	opts := fusefs.Options{Logf: log.Printf, Errors: o.errs, Debug: debug, Source: filepath.Base(src)}
	if block && !o.replayed {
		// A block device is mounted as fuseblk, whose own device is
		// iomap cookie 1: the kernel can then read file data itself
		// if it offers iomap. Not after an in-memory journal replay:
		// the device does not hold every current block.
		opts.IomapDevice = abi.DevFuseblk
	}
	return fusefs.NewServer(fuseFD, o.fsys, opts)
}

// afterConfine runs as soon as the daemon is confined. A test build (the
// sandboxprobe tag) replaces it with attempts to escape, which the
// sandbox must stop.
var afterConfine = func() error { return nil }

// peerUID returns the uid of the process at the other end of conn, as
// the kernel recorded it when the connection was made.
func peerUID(conn *fdpass.Conn) (uint32, error) {
	raw, err := conn.UnixConn().SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	return cred.Uid, nil
}

// dupFD returns a close-on-exec duplicate of f's descriptor, at 3 or above
// (go-fuse's /dev/fd/N cannot name descriptor 0).
func dupFD(f *os.File) (int, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return -1, fmt.Errorf("duplicating the /dev/fuse descriptor: %v", err)
	}
	return fd, nil
}
