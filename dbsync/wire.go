package dbsync

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// Op is what an Entry asks the receiver to do with one path.
type Op uint8

const (
	// OpPut replaces the whole file with Data.
	OpPut Op = 1
	// OpAppend appends Data to a file whose first Offset bytes hash to PrefixSHA256.
	OpAppend Op = 2
	// OpDelete removes the file.
	OpDelete Op = 3
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpAppend:
		return "append"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Entry flags.
const (
	// FlagSQLite marks an SQLite snapshot: the receiver removes stale -wal/-shm
	// sidecars so the new file is never combined with an old write-ahead log.
	FlagSQLite uint8 = 1 << 0
	knownFlags       = FlagSQLite
)

// BatchVersion is the push body version this package writes by default and
// the highest it reads. Version 1 (no owner block) is still read, and
// written to a peer whose manifest does not announce version 2.
const BatchVersion uint8 = 2

// Wire constants (see the package documentation for the layout).
const (
	batchMagic      = "MHSB"
	batchVersion1   = 1
	batchHeaderLen  = 16
	entryFixedLen   = 8
	maxPathLen      = 4096
	maxEntries      = 65535
	permMask        = 0o7777
	sha256Len       = 32
	putTrailerLen   = sha256Len + 8
	appendFixedLen  = 8 + sha256Len + sha256Len + 8
	ownerFixedLen   = 4 + 4 + 8 + 1 + 1 // uid, gid, mtime, two name lengths
	maxDataLenField = 1 << 40
)

// Batch is one push: a revision and the entries it applies. Slices in a
// parsed Batch alias the buffer given to ParseBatch.
type Batch struct {
	// Version is the wire version: 1 or 2 (ParseBatch sets it; 0 in
	// AppendBatch means BatchVersion). Only version 2 carries Owner and
	// MTime.
	Version  uint8
	Revision uint64
	Entries  []Entry
}

// Entry is one file operation inside a Batch.
type Entry struct {
	Op    Op
	Flags uint8
	Mode  uint32 // permission bits only (0o7777)
	Path  string // wire path: "<root name>[/<relative path>]"
	// Put: SHA256 of Data. Append: SHA256 of the whole file after the append.
	SHA256 [32]byte
	// Append only: the receiver's file must be exactly Offset bytes long and
	// hash to PrefixSHA256.
	Offset       uint64
	PrefixSHA256 [32]byte
	// Put and append, version 2 only: who owns the file on the sender
	// (names alias the parsed buffer) and its modification time in
	// nanoseconds since the Unix epoch (0: not set).
	Owner Owner
	MTime int64
	Data  []byte
}

// Decode errors. Each one is also a rejection reason.
var (
	ErrShort      = errors.New("truncated batch")
	ErrMagic      = errors.New("bad batch magic")
	ErrVersion    = errors.New("unsupported batch version")
	ErrFlags      = errors.New("unknown flags")
	ErrOp         = errors.New("unknown op")
	ErrMode       = errors.New("mode has bits outside 0o7777")
	ErrPathLen    = errors.New("path length out of range")
	ErrTrailing   = errors.New("trailing bytes after last entry")
	ErrDataLen    = errors.New("data length out of range")
	ErrEmptyBatch = errors.New("batch has no entries")
	ErrOwnerName  = errors.New("owner or group name has a control byte, space or ':'")
)

// ParseBatch decodes b. Entries are appended to entries[:0] (pass a reused
// slice and it does not allocate). Path strings and Data slices alias b
// without copying, so b must not be modified while the Batch is in use.
func ParseBatch(b []byte, entries []Entry) (Batch, error) {
	if len(b) < batchHeaderLen {
		return Batch{}, fmt.Errorf("header: %w", ErrShort)
	}
	if string(b[0:4]) != batchMagic {
		return Batch{}, ErrMagic
	}
	version := b[4]
	if version != batchVersion1 && version != BatchVersion {
		return Batch{}, fmt.Errorf("%w %d", ErrVersion, version)
	}
	if b[5] != 0 {
		return Batch{}, fmt.Errorf("batch: %w %#x", ErrFlags, b[5])
	}
	n := int(binary.BigEndian.Uint16(b[6:8]))
	if n == 0 {
		return Batch{}, ErrEmptyBatch
	}
	rev := binary.BigEndian.Uint64(b[8:16])
	entries = entries[:0]
	p := b[batchHeaderLen:]
	for i := 0; i < n; i++ {
		var e Entry
		var err error
		e, p, err = parseEntry(p, version)
		if err != nil {
			return Batch{}, fmt.Errorf("entry %d: %w", i, err)
		}
		entries = append(entries, e)
	}
	if len(p) != 0 {
		return Batch{}, ErrTrailing
	}
	return Batch{Version: version, Revision: rev, Entries: entries}, nil
}

func parseEntry(p []byte, version uint8) (Entry, []byte, error) {
	var e Entry
	if len(p) < entryFixedLen {
		return e, nil, ErrShort
	}
	e.Op = Op(p[0])
	e.Flags = p[1]
	e.Mode = binary.BigEndian.Uint32(p[2:6])
	pl := int(binary.BigEndian.Uint16(p[6:8]))
	p = p[entryFixedLen:]
	if e.Op != OpPut && e.Op != OpAppend && e.Op != OpDelete {
		return e, nil, fmt.Errorf("%w %d", ErrOp, e.Op)
	}
	if e.Flags&^knownFlags != 0 {
		return e, nil, fmt.Errorf("entry: %w %#x", ErrFlags, e.Flags)
	}
	if e.Mode&^permMask != 0 {
		return e, nil, ErrMode
	}
	if pl == 0 || pl > maxPathLen {
		return e, nil, ErrPathLen
	}
	if len(p) < pl {
		return e, nil, ErrShort
	}
	e.Path = unsafe.String(&p[0], pl) // aliases b, like Data: no allocation
	p = p[pl:]
	if version >= 2 && e.Op != OpDelete {
		var err error
		if p, err = parseOwner(p, &e); err != nil {
			return e, nil, err
		}
	}
	var dl uint64
	switch e.Op {
	case OpPut:
		if len(p) < putTrailerLen {
			return e, nil, ErrShort
		}
		copy(e.SHA256[:], p[:32])
		dl = binary.BigEndian.Uint64(p[32:40])
		p = p[putTrailerLen:]
	case OpAppend:
		if len(p) < appendFixedLen {
			return e, nil, ErrShort
		}
		e.Offset = binary.BigEndian.Uint64(p[0:8])
		copy(e.PrefixSHA256[:], p[8:40])
		copy(e.SHA256[:], p[40:72])
		dl = binary.BigEndian.Uint64(p[72:80])
		p = p[appendFixedLen:]
		if e.Offset > maxDataLenField {
			return e, nil, ErrDataLen
		}
	case OpDelete:
		return e, p, nil
	}
	if dl > maxDataLenField {
		return e, nil, ErrDataLen
	}
	if uint64(len(p)) < dl {
		return e, nil, ErrShort
	}
	e.Data = p[:dl:dl]
	return e, p[dl:], nil
}

// parseOwner reads the version 2 owner block into e and returns the rest.
func parseOwner(p []byte, e *Entry) ([]byte, error) {
	if len(p) < ownerFixedLen {
		return nil, ErrShort
	}
	e.Owner.UID = binary.BigEndian.Uint32(p[0:4])
	e.Owner.GID = binary.BigEndian.Uint32(p[4:8])
	e.MTime = int64(binary.BigEndian.Uint64(p[8:16]))
	p = p[16:]
	for _, name := range []*string{&e.Owner.User, &e.Owner.Group} {
		if len(p) < 1 {
			return nil, ErrShort
		}
		l := int(p[0])
		p = p[1:]
		if len(p) < l {
			return nil, ErrShort
		}
		if l > 0 {
			*name = unsafe.String(&p[0], l)
			if !validOwnerName(*name) {
				return nil, ErrOwnerName
			}
		}
		p = p[l:]
	}
	return p, nil
}

func appendOwner(dst []byte, e *Entry) []byte {
	dst = binary.BigEndian.AppendUint32(dst, e.Owner.UID)
	dst = binary.BigEndian.AppendUint32(dst, e.Owner.GID)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.MTime))
	dst = append(dst, byte(len(e.Owner.User)))
	dst = append(dst, e.Owner.User...)
	dst = append(dst, byte(len(e.Owner.Group)))
	return append(dst, e.Owner.Group...)
}

// wireVersion is the version to write for b.
func (b *Batch) wireVersion() uint8 {
	if b.Version == 0 {
		return BatchVersion
	}
	return b.Version
}

// AppendBatch appends the wire form of b to dst.
func AppendBatch(dst []byte, b Batch) ([]byte, error) {
	if len(b.Entries) == 0 {
		return dst, ErrEmptyBatch
	}
	if len(b.Entries) > maxEntries {
		return dst, fmt.Errorf("%d entries: too many", len(b.Entries))
	}
	version := b.wireVersion()
	if version != batchVersion1 && version != BatchVersion {
		return dst, fmt.Errorf("%w %d", ErrVersion, version)
	}
	dst = append(dst, batchMagic...)
	dst = append(dst, version, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b.Entries)))
	dst = binary.BigEndian.AppendUint64(dst, b.Revision)
	for i := range b.Entries {
		e := &b.Entries[i]
		if len(e.Path) == 0 || len(e.Path) > maxPathLen {
			return dst, fmt.Errorf("entry %d: %w", i, ErrPathLen)
		}
		if e.Mode&^permMask != 0 {
			return dst, fmt.Errorf("entry %d: %w", i, ErrMode)
		}
		dst = append(dst, byte(e.Op), e.Flags)
		dst = binary.BigEndian.AppendUint32(dst, e.Mode)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(e.Path)))
		dst = append(dst, e.Path...)
		if version >= 2 && e.Op != OpDelete {
			if !validOwnerName(e.Owner.User) || !validOwnerName(e.Owner.Group) {
				return dst, fmt.Errorf("entry %d: %w", i, ErrOwnerName)
			}
			dst = appendOwner(dst, e)
		}
		switch e.Op {
		case OpPut:
			dst = append(dst, e.SHA256[:]...)
			dst = binary.BigEndian.AppendUint64(dst, uint64(len(e.Data)))
			dst = append(dst, e.Data...)
		case OpAppend:
			dst = binary.BigEndian.AppendUint64(dst, e.Offset)
			dst = append(dst, e.PrefixSHA256[:]...)
			dst = append(dst, e.SHA256[:]...)
			dst = binary.BigEndian.AppendUint64(dst, uint64(len(e.Data)))
			dst = append(dst, e.Data...)
		case OpDelete:
		default:
			return dst, fmt.Errorf("entry %d: %w %d", i, ErrOp, e.Op)
		}
	}
	return dst, nil
}

// BatchDigest identifies a batch for retry detection: SHA-256 over the
// wire form with every Data field left out. Each put and append carries the
// SHA-256 of its resulting file (verified on apply), so the digest still
// covers the content, without hashing the data a second time. A version 2
// batch's owner blocks are covered too; a version 1 batch digests as it
// always did.
func BatchDigest(b Batch) [32]byte {
	h := sha256.New()
	version := b.wireVersion()
	var buf [batchHeaderLen + entryFixedLen + appendFixedLen + 2*maxOwnerName + ownerFixedLen]byte
	hdr := binary.BigEndian.AppendUint64(append(buf[:0], batchMagic...), b.Revision)
	h.Write(hdr)
	for i := range b.Entries {
		e := &b.Entries[i]
		p := append(buf[:0], byte(e.Op), e.Flags)
		p = binary.BigEndian.AppendUint32(p, e.Mode)
		p = binary.BigEndian.AppendUint16(p, uint16(len(e.Path)))
		h.Write(p)
		h.Write([]byte(e.Path))
		if version >= 2 && e.Op != OpDelete {
			h.Write(appendOwner(buf[:0], e))
		}
		p = append(buf[:0], e.SHA256[:]...)
		p = binary.BigEndian.AppendUint64(p, e.Offset)
		p = append(p, e.PrefixSHA256[:]...)
		p = binary.BigEndian.AppendUint64(p, uint64(len(e.Data)))
		h.Write(p)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// encodedEntryLen is the wire size of e in a batch of the given version,
// used to split batches.
func encodedEntryLen(e *Entry, version uint8) int {
	n := entryFixedLen + len(e.Path)
	if version >= 2 && e.Op != OpDelete {
		n += ownerFixedLen + len(e.Owner.User) + len(e.Owner.Group)
	}
	switch e.Op {
	case OpPut:
		n += putTrailerLen + len(e.Data)
	case OpAppend:
		n += appendFixedLen + len(e.Data)
	}
	return n
}
