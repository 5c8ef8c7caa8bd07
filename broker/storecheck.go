package broker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/highwayhash"
	"go.uber.org/zap"

	"github.com/sluicebus/sluice/internal/alarm"
)

// The start-up store check. nats-server (v2.15) trusts a stream's message
// blocks once its index (index.db) matches the last block's last record:
// a record damaged elsewhere is found only when read, and a consumer that
// reads it skips it without a word (filestore.go, firstMatching), so a
// replica with a flipped bit that becomes the leader loses acknowledged
// messages for every family (nats-io/nats-server#7549). A last block cut
// short is rebuilt without the cut records and the replica reports itself
// current without them. Before the server starts, the broker therefore
// reads every record of every stream's blocks against its checksum, and a
// replicated stream whose store is damaged is moved aside (quarantined):
// the server then rebuilds that replica from the others, as for a new
// peer. Only a minority of a stream's replicas may be damaged at once for
// that to hold; the moved store is kept for the operator.

// ErrStoreDamaged means a stream's store failed the start-up check.
var ErrStoreDamaged = errors.New("stream store damaged")

// QuarantineDir is where, under the data directory, damaged stream stores
// are moved: <data_dir>/quarantine/<account>/<stream>-<unix time>.
const QuarantineDir = "quarantine"

// Record layout of a v2.15 message block (server/filestore.go, msgHdrSize,
// hbit, recordHashSize): length (uint32; high bit: has headers), sequence
// (uint64), timestamp (int64), subject length (uint16), subject, [headers
// length (uint32), headers], payload, highwayhash-64 of the sequence,
// timestamp, subject, headers and payload (8 bytes), keyed with
// sha256("<stream>-<block index>").
const (
	recordHeaderSize = 22
	recordHashSize   = 8
	recordHeadersBit = 1 << 31
	recordMaxLen     = 32 << 20 // rlBadThresh
	// The sequence's high bits: an erased message, a tombstone.
	recordErasedBit    = 1 << 63
	recordTombstoneBit = 1 << 62
)

// streamStore is one stream's store as the check found it.
type streamStore struct {
	account, stream, dir string
	replicas             int // from meta.inf; 0 if unreadable
	err                  error
}

// streamMeta is what the check reads of a stream's meta.inf.
type streamMeta struct {
	Name        string `json:"name"`
	Replicas    int    `json:"num_replicas"`
	Compression string `json:"compression"`
}

// checkStreamStores checks every stream store under storeDir/jetstream
// (see checkStreamStore) and returns those that failed.
func checkStreamStores(storeDir string) ([]streamStore, error) {
	dirs, err := filepath.Glob(filepath.Join(storeDir, "jetstream", "*", "streams", "*"))
	if err != nil {
		return nil, err
	}
	var damaged []streamStore
	for _, dir := range dirs {
		s := streamStore{dir: dir, stream: filepath.Base(dir), account: filepath.Base(filepath.Dir(filepath.Dir(dir)))}
		s.replicas, s.err = checkStreamStore(dir)
		if s.err != nil {
			damaged = append(damaged, s)
		}
	}
	groups, err := filepath.Glob(filepath.Join(storeDir, "jetstream", "$SYS", "_js_", "[SC]-*"))
	if err != nil {
		return nil, err
	}
	for _, dir := range groups {
		if err := checkRaftSnapshots(dir); err != nil {
			// A Raft group exists only for a replicated asset in a cluster.
			damaged = append(damaged, streamStore{dir: dir, stream: filepath.Base(dir), account: "$SYS", replicas: 3, err: err})
		}
	}
	return damaged, nil
}

// keyedSum is nats-server's checksum of data: a highwayhash-64 keyed with
// sha256(name).
func keyedSum(name string, data []byte) []byte {
	key := sha256.Sum256([]byte(name))
	hh, err := highwayhash.New64(key[:])
	if err != nil {
		panic(err) // only a key of another size than sha256's fails
	}
	hh.Write(data)
	return hh.Sum(nil)
}

// replicasUnknown: a store whose meta.inf cannot be trusted says nothing
// of its replicas.
const replicasUnknown = -1

// checkMetaSum checks a stream's meta.inf against its meta.sum (the hex of
// a highwayhash-64 of it, keyed with sha256(<stream>): server/jetstream.go).
// The server skips a stream whose meta fails it and the cluster's
// assignment creates the stream again over the old blocks: a replica so
// rebuilt that became the leader lost acked messages for every family
// (TestCorruptedStore, "stream meta.inf and meta.sum garbled": 28-48 of
// them). Moved aside, the replica is rebuilt from the others instead.
func checkMetaSum(dir string, meta []byte) error {
	sum, err := os.ReadFile(filepath.Join(dir, "meta.sum"))
	if err != nil {
		return fmt.Errorf("%w: meta.sum unreadable: %w", ErrStoreDamaged, err)
	}
	if got := hex.EncodeToString(keyedSum(filepath.Base(dir), meta)); got != string(sum) {
		return fmt.Errorf("%w: meta.inf does not match meta.sum", ErrStoreDamaged)
	}
	return nil
}

// checkRaftSnapshots checks a stream's or consumer's Raft group's
// snapshots (snapshots/snap.<term>.<index>, server/raft.go
// loadLastSnapshot): each ends with a highwayhash-64 of the rest, keyed
// with sha256(<group>). The server refuses to create the stream or
// consumer on a corrupt one ("raft: snapshot corrupt") and the replica
// stays down for good; moved aside, the group is created afresh and
// caught up from the others.
func checkRaftSnapshots(dir string) error {
	snaps, err := filepath.Glob(filepath.Join(dir, "snapshots", "snap.*"))
	if err != nil {
		return err
	}
	for _, snap := range snaps {
		buf, err := os.ReadFile(snap)
		if err != nil || len(buf) < recordHashSize {
			return fmt.Errorf("%w: Raft snapshot %s unreadable or too short", ErrStoreDamaged, filepath.Base(snap))
		}
		if !bytes.Equal(keyedSum(filepath.Base(dir), buf[:len(buf)-recordHashSize]), buf[len(buf)-recordHashSize:]) {
			return fmt.Errorf("%w: Raft snapshot %s fails its checksum", ErrStoreDamaged, filepath.Base(snap))
		}
	}
	return nil
}

// checkStreamStore reads a stream's meta.inf and every record of its
// message blocks: a record that fails its checksum, or records that its
// index (index.db) saw gone from the blocks, is damage (ErrStoreDamaged).
// A torn last record alone, as a crash leaves it, is not: the server
// drops it and its Raft log still has what was acked. A store written
// compressed or encrypted is not checked.
func checkStreamStore(dir string) (replicas int, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, "meta.inf"))
	if err != nil {
		return 0, nil
	}
	if err := checkMetaSum(dir, raw); err != nil {
		return replicasUnknown, err
	}
	var meta streamMeta
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Name == "" {
		return 0, nil
	}
	if meta.Compression != "" && meta.Compression != "none" {
		return meta.Replicas, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "msgs", "key.ssk")); err == nil {
		return meta.Replicas, nil // encrypted
	}
	blocks, err := messageBlocks(dir)
	if err != nil {
		return meta.Replicas, err
	}
	var lastSeq uint64
	for i, blk := range blocks {
		seq, err := checkBlock(meta.Name, blk, i == len(blocks)-1)
		if err != nil {
			return meta.Replicas, err
		}
		lastSeq = max(lastSeq, seq)
	}
	if err := checkIndex(meta.Name, dir, lastSeq); err != nil {
		return meta.Replicas, err
	}
	return meta.Replicas, checkConsumers(dir, lastSeq, meta.Replicas > 1)
}

// messageBlock is a block file and its index (N in N.blk).
type messageBlock struct {
	path  string
	index uint32
}

// messageBlocks are the stream's block files, in block order.
func messageBlocks(dir string) ([]messageBlock, error) {
	names, err := filepath.Glob(filepath.Join(dir, "msgs", "*.blk"))
	if err != nil {
		return nil, err
	}
	var blocks []messageBlock
	for _, name := range names {
		n, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".blk"), 10, 32)
		if err != nil {
			continue // not a block (N.blk.tmp and the like)
		}
		blocks = append(blocks, messageBlock{path: name, index: uint32(n)})
	}
	slices.SortFunc(blocks, func(a, b messageBlock) int { return int(a.index) - int(b.index) })
	return blocks, nil
}

// checkBlock checks every record of blk against its checksum and returns
// the highest sequence of its intact records. Only the last block may end
// in a torn record.
func checkBlock(stream string, blk messageBlock, last bool) (lastSeq uint64, err error) {
	buf, err := os.ReadFile(blk.path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrStoreDamaged, err)
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s-%d", stream, blk.index))
	hh, err := highwayhash.New64(key[:])
	if err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	for at := 0; at < len(buf); {
		bad := func(what string) error {
			if last && torn(buf, at) {
				return nil
			}
			return fmt.Errorf("%w: %s: record at offset %d of %d: %s", ErrStoreDamaged, filepath.Base(blk.path), at, len(buf), what)
		}
		if at+recordHeaderSize > len(buf) {
			return lastSeq, bad("cut short")
		}
		hdr := buf[at : at+recordHeaderSize]
		rl := le.Uint32(hdr)
		hasHeaders := rl&recordHeadersBit != 0
		rl &^= recordHeadersBit
		slen := int(le.Uint16(hdr[20:]))
		shlen := slen
		if hasHeaders {
			shlen += 4
		}
		dlen := int(rl) - recordHeaderSize
		if dlen < 0 || shlen > dlen-recordHashSize || rl > recordMaxLen || at+int(rl) > len(buf) {
			return lastSeq, bad(fmt.Sprintf("length %d does not fit", rl))
		}
		data := buf[at+recordHeaderSize : at+int(rl)]
		hh.Reset()
		hh.Write(hdr[4:20])
		hh.Write(data[:slen])
		if hasHeaders {
			hh.Write(data[slen+4 : dlen-recordHashSize])
		} else {
			hh.Write(data[slen : dlen-recordHashSize])
		}
		var sum [recordHashSize]byte
		hh.Sum(sum[:0])
		if !bytes.Equal(sum[:], data[dlen-recordHashSize:]) {
			return lastSeq, bad("checksum does not match")
		}
		if hasHeaders && !headersFit(data[slen:dlen-recordHashSize]) {
			return lastSeq, bad("headers length does not fit its headers")
		}
		lastSeq = max(lastSeq, le.Uint64(hdr[4:])&^(recordErasedBit|recordTombstoneBit))
		at += int(rl)
	}
	return lastSeq, nil
}

// headersFit reports whether a record's headers length (the 4 bytes
// before them, which its checksum does not cover: server/filestore.go
// msgFromBufEx) frames a NATS header block, "NATS/1.0...\r\n\r\n". A
// changed length would move the boundary between headers and payload,
// and the server would serve both wrong under a good checksum.
func headersFit(rest []byte) bool {
	if len(rest) < 4 {
		return false
	}
	hl := int(binary.LittleEndian.Uint32(rest))
	if hl > len(rest)-4 {
		return false
	}
	h := rest[4 : 4+hl]
	return bytes.HasPrefix(h, []byte("NATS/1.0")) && bytes.HasSuffix(h, []byte("\r\n\r\n"))
}

// torn reports whether the bytes from at to the end of a block could be
// the last record, whose write a crash cut short: a length that reaches
// the end of the block, or nothing but zeros. Whether the store had
// synced that record, checkIndex decides.
func torn(buf []byte, at int) bool {
	if at+4 > len(buf) || !slices.ContainsFunc(buf[at:], func(c byte) bool { return c != 0 }) {
		return true
	}
	rl := int(binary.LittleEndian.Uint32(buf[at:]) &^ recordHeadersBit)
	return rl >= recordHeaderSize+recordHashSize && rl <= recordMaxLen && at+rl >= len(buf)
}

// The stream index (index.db, server/filestore.go _writeFullState): magic,
// version, then uvarint messages, bytes, first sequence, varint first
// time, uvarint last sequence, ...; a highwayhash-64 keyed with
// sha256(<stream>) ends it.
const (
	indexMagic      = 11
	indexMaxVersion = 4
)

// checkIndex compares the stream's index (index.db) with the blocks: the
// last sequence the index saw must still be in a block (a message, an
// erased one or a tombstone), or the blocks lost records the store had
// written before it saved the index. An index that is missing, fails its
// own checksum or is of an unknown version says nothing (the server
// rebuilds it from the blocks).
func checkIndex(stream, dir string, lastSeq uint64) error {
	buf, err := os.ReadFile(filepath.Join(dir, "msgs", "index.db"))
	if err != nil || len(buf) < 32 || buf[0] != indexMagic || buf[1] == 0 || buf[1] > indexMaxVersion {
		return nil
	}
	body, sum := buf[:len(buf)-recordHashSize], buf[len(buf)-recordHashSize:]
	if !bytes.Equal(keyedSum(stream, body), sum) {
		return nil
	}
	r := bytes.NewReader(body[2:])
	var fields [5]uint64 // messages, bytes, first sequence, first time, last sequence
	for i := range fields {
		if i == 3 {
			_, err = binary.ReadVarint(r)
		} else {
			fields[i], err = binary.ReadUvarint(r)
		}
		if err != nil {
			return nil
		}
	}
	if indexed := fields[4]; indexed > lastSeq {
		return fmt.Errorf("%w: index.db saw sequence %d, the blocks end at %d: they lost records", ErrStoreDamaged, indexed, lastSeq)
	}
	return nil
}

// A consumer's state file (obs/<consumer>/o.dat, server/store.go
// encodeConsumerState): magic 22, version 1 or 2, uvarint ack floor
// (consumer, stream), delivered (consumer, stream), then the pending and
// redelivered lists. It has no checksum: the server takes a garbled one
// for a state and skips the messages it says were acked.
const (
	consumerMagic      = 22
	consumerMaxVersion = 2
)

// checkConsumers reads each consumer's state file: one that does not
// parse to its end, whose ack floor is past what it delivered, or (for a
// stream with one replica) that delivered past the stream's last sequence
// (lastSeq) is damage.
//
// replicated: the stream has more than one replica. A follower then
// applies its consumers' Raft groups apart from its stream's: stopped
// under load, its consumer state can be past its stream's last message,
// which the stream's own Raft log and leader bring in after the start.
// That is no damage (nats-server itself only warns "ack floor ... is ahead
// of stream's last sequence"), and moving the store aside for it costs
// more than it mends: the whole replica is rebuilt, its messages fetched
// again from the leader. (Before v2.15.3 the rebuilt replica, its
// consumers ahead of its stream, compacted its stream to a check floor of
// 0 in checkInterestState: a purge of what it held, lost to the families
// whose leaders later sat on it.)
func checkConsumers(dir string, lastSeq uint64, replicated bool) error {
	files, err := filepath.Glob(filepath.Join(dir, "obs", "*", "o.dat"))
	if err != nil {
		return err
	}
	for _, f := range files {
		buf, err := os.ReadFile(f)
		if err != nil || len(buf) == 0 {
			continue // none written yet: the server starts from its Raft group
		}
		limit := lastSeq
		if replicated {
			limit = 0 // no bound: see above
		}
		if err := consumerStateFits(buf, limit); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrStoreDamaged, filepath.Join(filepath.Base(filepath.Dir(f)), "o.dat"), err)
		}
	}
	return nil
}

// consumerStateFits parses a consumer state file as the server does
// (server/filestore.go decodeConsumerState) and checks what it says.
func consumerStateFits(buf []byte, lastSeq uint64) error {
	if len(buf) < 2 || buf[0] != consumerMagic || buf[1] == 0 || buf[1] > consumerMaxVersion {
		return errors.New("no consumer state header")
	}
	version, r := buf[1], bytes.NewReader(buf[2:])
	var bad bool
	seq := func() uint64 {
		v, err := binary.ReadUvarint(r)
		bad = bad || err != nil
		return v
	}
	stamp := func() {
		_, err := binary.ReadVarint(r)
		bad = bad || err != nil
	}
	ackConsumer, ackStream, deliveredConsumer, deliveredStream := seq(), seq(), seq(), seq()
	if n := seq(); n > 0 && !bad {
		stamp()
		for range min(n, uint64(len(buf))) {
			seq()
			if version == 2 {
				seq()
			}
			stamp()
		}
		bad = bad || n > uint64(len(buf))
	}
	if n := seq(); n > 0 && !bad {
		for range min(n, uint64(len(buf))) {
			seq()
			seq()
		}
		bad = bad || n > uint64(len(buf))
	}
	switch {
	case bad || r.Len() > 0:
		return errors.New("does not parse to its end")
	case version == 2 && (ackConsumer > deliveredConsumer || ackStream > deliveredStream):
		return fmt.Errorf("ack floor %d/%d past delivered %d/%d", ackConsumer, ackStream, deliveredConsumer, deliveredStream)
	case version == 2 && lastSeq > 0 && deliveredStream > lastSeq:
		return fmt.Errorf("delivered stream sequence %d past the stream's last %d", deliveredStream, lastSeq)
	}
	return nil
}

// quarantine moves a damaged stream store to storeDir/quarantine, where
// the server does not look, and returns where.
func quarantine(storeDir string, s streamStore) (string, error) {
	to := filepath.Join(storeDir, QuarantineDir, s.account, fmt.Sprintf("%s-%d", s.stream, time.Now().Unix()))
	if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
		return "", err
	}
	if err := os.Rename(s.dir, to); err != nil {
		return "", err
	}
	return to, nil
}

// guardStores checks the stream stores under storeDir before the server
// opens them (checkStreamStores). A damaged store of a replicated stream
// in a cluster is quarantined, so that the server rebuilds the replica
// from the others; any other damaged store is kept as it is, there being
// no other copy. Either raises alarm.StoreQuarantined.
func (b *Broker) guardStores(storeDir string) {
	damaged, err := checkStreamStores(storeDir)
	if err != nil {
		b.log.Warn("the start-up store check did not run", zap.String("store", storeDir), zap.Error(err))
		return
	}
	for _, s := range damaged {
		fields := []zap.Field{zap.String("account", s.account), zap.String("stream", s.stream), zap.String("dir", s.dir), zap.Error(s.err)}
		// A store kept has its own subject, raised until a start finds
		// it sound; the moved ones share the broker's (quarantineAlarm).
		kept := b.cfg.Name + "/" + s.stream
		// A replicated store, or one whose meta cannot say (the server
		// would not load it anyway), is rebuilt from the others.
		if !b.cfg.Cluster.Enabled() || (s.replicas != replicasUnknown && s.replicas < 2) {
			b.log.Error("stream store damaged; no other replica to rebuild it from, kept as it is (messages in damaged records are skipped)", fields...)
			b.raiseStoreAlarm(kept, fmt.Sprintf("stream %s: store damaged, no other replica to rebuild it from (%v)", s.stream, s.err))
			continue
		}
		to, err := quarantine(storeDir, s)
		if err != nil {
			b.log.Error("stream store damaged; moving it aside failed, kept as it is", append(fields, zap.NamedError("move", err))...)
			b.raiseStoreAlarm(kept, fmt.Sprintf("stream %s: store damaged and not moved aside (%v)", s.stream, err))
			continue
		}
		b.log.Error("stream store damaged: moved aside; the replica is rebuilt from the other brokers",
			append(fields, zap.String("quarantined_to", to))...)
		b.raiseStoreAlarm(b.cfg.Name, fmt.Sprintf("stream %s: store damaged, moved to %s and rebuilt from the other replicas; check the disk, then remove it", s.stream, to))
	}
}

func (b *Broker) raiseStoreAlarm(subject, cause string) {
	if b.alarms != nil {
		b.alarms.Raise(alarm.StoreQuarantined, subject, cause)
	}
}

// quarantineAlarm sets alarm.StoreQuarantined for the broker on m while its
// data directory's quarantine holds stores: it clears once the operator
// removed them. WatchAlarms calls it each round.
func (b *Broker) quarantineAlarm(m *alarm.Manager) {
	dir := filepath.Join(b.cfg.DataDir, QuarantineDir)
	moved, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	m.Set(len(moved) > 0, alarm.StoreQuarantined, b.cfg.Name,
		fmt.Sprintf("%d damaged stream stores moved to %s and rebuilt from the other replicas; check the disk, then remove them", len(moved), dir))
}
