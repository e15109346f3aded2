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

// Wire constants (see the package documentation for the layout).
const (
	batchMagic      = "MHSB"
	batchVersion    = 1
	batchHeaderLen  = 16
	entryFixedLen   = 8
	maxPathLen      = 4096
	maxEntries      = 65535
	permMask        = 0o7777
	sha256Len       = 32
	putTrailerLen   = sha256Len + 8
	appendFixedLen  = 8 + sha256Len + sha256Len + 8
	maxDataLenField = 1 << 40
)

// Batch is one push: a revision and the entries it applies. Slices in a
// parsed Batch alias the buffer given to ParseBatch.
type Batch struct {
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
	Data         []byte
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
	if b[4] != batchVersion {
		return Batch{}, fmt.Errorf("%w %d", ErrVersion, b[4])
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
		e, p, err = parseEntry(p)
		if err != nil {
			return Batch{}, fmt.Errorf("entry %d: %w", i, err)
		}
		entries = append(entries, e)
	}
	if len(p) != 0 {
		return Batch{}, ErrTrailing
	}
	return Batch{Revision: rev, Entries: entries}, nil
}

func parseEntry(p []byte) (Entry, []byte, error) {
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

// AppendBatch appends the wire form of b to dst.
func AppendBatch(dst []byte, b Batch) ([]byte, error) {
	if len(b.Entries) == 0 {
		return dst, ErrEmptyBatch
	}
	if len(b.Entries) > maxEntries {
		return dst, fmt.Errorf("%d entries: too many", len(b.Entries))
	}
	dst = append(dst, batchMagic...)
	dst = append(dst, batchVersion, 0)
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
// covers the content, without hashing the data a second time.
func BatchDigest(b Batch) [32]byte {
	h := sha256.New()
	var buf [batchHeaderLen + entryFixedLen + appendFixedLen + 32]byte
	hdr := binary.BigEndian.AppendUint64(append(buf[:0], batchMagic...), b.Revision)
	h.Write(hdr)
	for i := range b.Entries {
		e := &b.Entries[i]
		p := append(buf[:0], byte(e.Op), e.Flags)
		p = binary.BigEndian.AppendUint32(p, e.Mode)
		p = binary.BigEndian.AppendUint16(p, uint16(len(e.Path)))
		h.Write(p)
		h.Write([]byte(e.Path))
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

// encodedEntryLen is the wire size of e, used to split batches.
func encodedEntryLen(e *Entry) int {
	n := entryFixedLen + len(e.Path)
	switch e.Op {
	case OpPut:
		n += putTrailerLen + len(e.Data)
	case OpAppend:
		n += appendFixedLen + len(e.Data)
	}
	return n
}
