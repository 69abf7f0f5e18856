package ext4

// Htree (dir_index) directory hashing.
//
// This is a bit-exact port of ext4fs_dirhash in Linux fs/ext4/hash.c and
// ext2fs_dirhash in e2fsprogs lib/ext2fs/dirhash.c. Lookups in an indexed
// directory descend the dx tree by comparing these hashes, so any deviation
// (even in the sign of a single byte) sends the lookup to the wrong leaf
// block and a file that exists appears missing.

import "errors"

// Hash versions as stored in dx_root.info.hash_version and s_def_hash_version;
// the *Unsigned variants are selected by adding 3 when the superblock has
// EXT2_FLAGS_UNSIGNED_HASH (0x2) set.
const (
	// hashLegacy is dx_hack_hash with bytes read as signed char.
	hashLegacy = 0
	// hashHalfMD4 is the half-MD4 hash with bytes read as signed char; it is
	// the mkfs default.
	hashHalfMD4 = 1
	// hashTea is the TEA-based hash with bytes read as signed char.
	hashTea = 2
	// hashLegacyUnsigned is dx_hack_hash with bytes read as unsigned char.
	hashLegacyUnsigned = 3
	// hashHalfMD4Unsigned is half-MD4 with bytes read as unsigned char.
	hashHalfMD4Unsigned = 4
	// hashTeaUnsigned is TEA with bytes read as unsigned char.
	hashTeaUnsigned = 5
	// hashSipHash is SipHash over the casefolded name, keyed by the
	// encryption key; it only exists on casefold+encrypt directories and is
	// not supported here.
	hashSipHash = 6
)

// errUnsupportedHash is returned by dirHash for hash versions it cannot
// compute (SipHash, which needs the fscrypt key, and unknown values).
var errUnsupportedHash = errors.New("ext4: unsupported directory hash version")

// dxHtreeEOF32 is EXT4_HTREE_EOF_32BIT: the 31-bit readdir cookie that marks
// end-of-directory. A real major hash must never map onto it, so the kernel
// nudges the one colliding value down by one step.
const dxHtreeEOF32 = 0x7fffffff

// dxDefaultSeed is the MD4 initial state the kernel uses as the hash seed
// when s_hash_seed is all zero (file systems made before seeds existed).
var dxDefaultSeed = [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}

// dirHash returns the major and minor htree hash of name.
//
// seed is s_hash_seed as four little-endian u32 words; an all-zero seed
// means "use the default" (0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476),
// as the kernel does. The legacy hash ignores the seed and has minor 0.
//
// The returned major hash has its low bit cleared (the kernel reserves it as
// the collision-continuation flag in dx entries), and if it equals
// EXT4_HTREE_EOF_32BIT<<1 it becomes (EXT4_HTREE_EOF_32BIT-1)<<1, exactly
// as the kernel does.
//
// Unknown versions (including siphash, which needs casefold+encryption)
// return errUnsupportedHash.
//
// dirHash does not allocate. The kernel never hashes an empty name, but an
// empty name is accepted and hashed the way the C code would (no rounds).
func dirHash(name []byte, version uint8, seed [4]uint32) (major, minor uint32, err error) {
	buf := dxDefaultSeed
	if seed != [4]uint32{} {
		buf = seed
	}

	var hash uint32
	switch version {
	case hashLegacy, hashLegacyUnsigned:
		hash = dxHackHash(name, version == hashLegacyUnsigned)
	case hashHalfMD4, hashHalfMD4Unsigned:
		unsigned := version == hashHalfMD4Unsigned
		var in [8]uint32
		// The C loop is "while (len > 0) { ...; len -= 32; p += 32; }",
		// handing str2hashbuf the whole remaining tail each round; slicing
		// p the same way keeps that shape (no copy, no allocation).
		for p := name; len(p) > 0; {
			dxStr2HashBuf(p, in[:], unsigned)
			dxHalfMD4Transform(&buf, &in)
			if len(p) <= 32 {
				break
			}
			p = p[32:]
		}
		hash, minor = buf[1], buf[2]
	case hashTea, hashTeaUnsigned:
		unsigned := version == hashTeaUnsigned
		var in [4]uint32
		for p := name; len(p) > 0; {
			dxStr2HashBuf(p, in[:], unsigned)
			dxTEATransform(&buf, &in)
			if len(p) <= 16 {
				break
			}
			p = p[16:]
		}
		hash, minor = buf[0], buf[1]
	default:
		return 0, 0, errUnsupportedHash
	}

	hash &^= 1
	if hash == dxHtreeEOF32<<1 {
		hash = (dxHtreeEOF32 - 1) << 1
	}
	return hash, minor, nil
}

// dxChar widens a name byte the way C's (int) cast of a char does: x86's
// plain char is signed, so the historical (signed) hash versions see bytes
// >= 0x80 as negative; the *Unsigned versions exist for hosts (ARM, PPC)
// whose char is unsigned. Go's int8 -> uint32 conversion sign-extends,
// reproducing the two's-complement bits of the C int.
func dxChar(b byte, unsigned bool) uint32 {
	if unsigned {
		return uint32(b)
	}
	return uint32(int8(b))
}

// dxHackHash is dx_hack_hash_{signed,unsigned}: the original ext3 htree hash.
// It has no seed and no minor hash.
func dxHackHash(name []byte, unsigned bool) uint32 {
	var hash0, hash1 uint32 = 0x12a3fe2d, 0x37abe8f9
	for _, b := range name {
		// C computes ((int)c * 7152373) in int; the product fits in 32 bits
		// for every c in [-128, 255], so uint32 wrapping arithmetic gives
		// the same bit pattern.
		hash := hash1 + (hash0 ^ dxChar(b, unsigned)*7152373)
		if hash&0x80000000 != 0 {
			hash -= 0x7fffffff
		}
		hash1 = hash0
		hash0 = hash
	}
	return hash0 << 1
}

// dxStr2HashBuf is str2hashbuf_{signed,unsigned}: it packs up to 4*len(buf)
// bytes of msg, big-endian-ish, into len(buf) words, and fills the rest with
// a padding word derived from len(msg).
//
// msg is the remaining tail of the name, as in the kernel. The pad is
// computed from its full length even though only the first 4*len(buf)
// bytes are read; that only matters for the last round, where the tail is
// short enough to need padding and the two lengths coincide.
func dxStr2HashBuf(msg []byte, buf []uint32, unsigned bool) {
	n := uint32(len(msg))
	pad := n | n<<8
	pad |= pad << 16

	num := len(buf)
	if len(msg) > num*4 {
		msg = msg[:num*4]
	}

	val := pad
	w := 0
	for i, b := range msg {
		val = dxChar(b, unsigned) + val<<8
		if i%4 == 3 {
			buf[w] = val
			w++
			val = pad
		}
	}
	// The C code stores the accumulator once more after the loop: for a
	// trailing partial word that is the name bytes shifted in after the
	// leftover pad bytes; on a word boundary it is just pad. Every word
	// after that is pad.
	if w < num {
		buf[w] = val
		w++
	}
	for ; w < num; w++ {
		buf[w] = pad
	}
}

// Half-MD4 round constants: K2 and K3 are the MD4 round-2/3 constants
// sqrt(2) and sqrt(3) scaled by 2^30 (octal 013240474631 and 015666365641
// in the kernel source).
const (
	dxK1 = 0
	dxK2 = 0x5a827999
	dxK3 = 0x6ed9eba1
)

// dxRotl is rol32.
func dxRotl(x uint32, s uint) uint32 { return x<<s | x>>(32-s) }

// dxF is the MD4 round-1 selection function, in hash.c's form.
func dxF(x, y, z uint32) uint32 { return z ^ (x & (y ^ z)) }

// dxG is the MD4 round-2 majority function. hash.c writes it with "+"
// rather than "|"; the two terms never share a set bit, so both agree.
func dxG(x, y, z uint32) uint32 { return (x & y) + ((x ^ y) & z) }

// dxH is the MD4 round-3 parity function.
func dxH(x, y, z uint32) uint32 { return x ^ y ^ z }

// dxHalfMD4Transform is half_md4_transform: MD4 with 8 input words and
// three 8-step rounds, accumulating into buf.
func dxHalfMD4Transform(buf *[4]uint32, in *[8]uint32) {
	a, b, c, d := buf[0], buf[1], buf[2], buf[3]

	// Round 1.
	a = dxRotl(a+dxF(b, c, d)+in[0]+dxK1, 3)
	d = dxRotl(d+dxF(a, b, c)+in[1]+dxK1, 7)
	c = dxRotl(c+dxF(d, a, b)+in[2]+dxK1, 11)
	b = dxRotl(b+dxF(c, d, a)+in[3]+dxK1, 19)
	a = dxRotl(a+dxF(b, c, d)+in[4]+dxK1, 3)
	d = dxRotl(d+dxF(a, b, c)+in[5]+dxK1, 7)
	c = dxRotl(c+dxF(d, a, b)+in[6]+dxK1, 11)
	b = dxRotl(b+dxF(c, d, a)+in[7]+dxK1, 19)

	// Round 2.
	a = dxRotl(a+dxG(b, c, d)+in[1]+dxK2, 3)
	d = dxRotl(d+dxG(a, b, c)+in[3]+dxK2, 5)
	c = dxRotl(c+dxG(d, a, b)+in[5]+dxK2, 9)
	b = dxRotl(b+dxG(c, d, a)+in[7]+dxK2, 13)
	a = dxRotl(a+dxG(b, c, d)+in[0]+dxK2, 3)
	d = dxRotl(d+dxG(a, b, c)+in[2]+dxK2, 5)
	c = dxRotl(c+dxG(d, a, b)+in[4]+dxK2, 9)
	b = dxRotl(b+dxG(c, d, a)+in[6]+dxK2, 13)

	// Round 3.
	a = dxRotl(a+dxH(b, c, d)+in[3]+dxK3, 3)
	d = dxRotl(d+dxH(a, b, c)+in[7]+dxK3, 9)
	c = dxRotl(c+dxH(d, a, b)+in[2]+dxK3, 11)
	b = dxRotl(b+dxH(c, d, a)+in[6]+dxK3, 15)
	a = dxRotl(a+dxH(b, c, d)+in[1]+dxK3, 3)
	d = dxRotl(d+dxH(a, b, c)+in[5]+dxK3, 9)
	c = dxRotl(c+dxH(d, a, b)+in[0]+dxK3, 11)
	b = dxRotl(b+dxH(c, d, a)+in[4]+dxK3, 15)

	buf[0] += a
	buf[1] += b
	buf[2] += c
	buf[3] += d
}

// dxTEADelta is the TEA key-schedule constant, 2^32 / golden ratio.
const dxTEADelta = 0x9e3779b9

// dxTEATransform is TEA_transform: 16 TEA cycles that encrypt buf[0:2]
// with the 4 input words as the key, accumulating into buf[0:2]. buf[2:4]
// are never touched, as in the kernel.
func dxTEATransform(buf *[4]uint32, in *[4]uint32) {
	var sum uint32
	b0, b1 := buf[0], buf[1]
	a, b, c, d := in[0], in[1], in[2], in[3]
	for range 16 {
		sum += dxTEADelta
		b0 += ((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >> 5) + b)
		b1 += ((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >> 5) + d)
	}
	buf[0] += b0
	buf[1] += b1
}
