package ext4

import (
	"encoding/binary"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's raw crc32c(seed, data): no inversion on the way in
// or out, which is how ext4 chains seeds (uuid, inode number, generation).
// Go's crc32.Update inverts on both ends, so undo it.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

var zero4 [4]byte

func crc32cU32(seed, v uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return crc32c(seed, b[:])
}

func crc32cU64(seed uint32, v uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return crc32c(seed, b[:])
}

// crc16Table is CRC-16/ARC (polynomial 0x8005, reflected), as lib/crc16.c.
var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for j := 0; j < 8; j++ {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return
}()

func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc = crc>>8 ^ crc16Table[byte(crc)^b]
	}
	return crc
}
