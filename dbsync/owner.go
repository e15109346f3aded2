package dbsync

import (
	"io/fs"
	"os/user"
	"strconv"
	"syscall"
)

// Owner is who owns a replicated file: the numeric ids and the names the
// describing node's /etc/passwd and /etc/group give them ("" when it has no
// entry for the id). Names travel because the two nodes are identical
// installs whose system accounts (e.g. Kea's _kea) may still have been
// given different ids.
type Owner struct {
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
}

// maxOwnerName bounds a user or group name on the wire (one length byte).
const maxOwnerName = 255

// validOwnerName reports whether s may be sent as a user or group name:
// no control bytes, spaces or ':' (the passwd/group field separator), so
// nothing sent can be read as another entry or field.
func validOwnerName(s string) bool {
	if len(s) > maxOwnerName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// ownerMatches reports whether a peer file owned by peer is what applying
// local's owner would produce there. The receiver maps a name it knows to
// its own id and otherwise uses the numeric id (mapOwner), so after an
// apply the peer shows either the same name or the same number. One case
// is taken as matching although an apply would change it: the peer's file
// has the master's numeric id, under another name, while the peer's own
// account of the master's name has a different id (it takes two installs
// whose accounts differ plus a file owned by exactly that id). Pure.
func ownerMatches(local, peer Owner) bool {
	userOK := (local.User != "" && peer.User == local.User) || peer.UID == local.UID
	groupOK := (local.Group != "" && peer.Group == local.Group) || peer.GID == local.GID
	return userOK && groupOK
}

// idLookup resolves names to this node's ids; ok=false when the name is
// unknown here.
type idLookup interface {
	userID(name string) (uint32, bool)
	groupID(name string) (uint32, bool)
}

// mapOwner is the uid and gid a received file gets on this node: the local
// id of the master's user/group name when this node has that name, else the
// master's numeric id. Pure given lookup.
func mapOwner(o Owner, lookup idLookup) (uid, gid uint32) {
	uid, gid = o.UID, o.GID
	if o.User != "" {
		if id, ok := lookup.userID(o.User); ok {
			uid = id
		}
	}
	if o.Group != "" {
		if id, ok := lookup.groupID(o.Group); ok {
			gid = id
		}
	}
	return uid, gid
}

// accounts answers id and name lookups from this node's account database
// (os/user: /etc/passwd and /etc/group, or NSS with cgo), remembering each
// answer. A failed lookup, whatever the reason, counts as "no such entry":
// the numeric id is used, as on a node that lacks the account. One is made per manifest, push or applied batch, so an edit of
// /etc/passwd is seen by the next one and a batch of many files owned by
// the same user reads the database once.
type accounts struct {
	userNames  map[uint32]string
	groupNames map[uint32]string
	userIDs    map[string]idAnswer
	groupIDs   map[string]idAnswer
}

type idAnswer struct {
	id uint32
	ok bool
}

func newAccounts() *accounts {
	return &accounts{
		userNames: map[uint32]string{}, groupNames: map[uint32]string{},
		userIDs: map[string]idAnswer{}, groupIDs: map[string]idAnswer{},
	}
}

// owner describes the owner of fi with this node's names.
func (a *accounts) owner(fi fs.FileInfo) Owner {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Owner{}
	}
	o := Owner{UID: st.Uid, GID: st.Gid}
	o.User = a.userName(st.Uid)
	o.Group = a.groupName(st.Gid)
	return o
}

func (a *accounts) userName(uid uint32) string {
	if n, ok := a.userNames[uid]; ok {
		return n
	}
	var name string
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err == nil && validOwnerName(u.Username) {
		name = u.Username
	}
	a.userNames[uid] = name
	return name
}

func (a *accounts) groupName(gid uint32) string {
	if n, ok := a.groupNames[gid]; ok {
		return n
	}
	var name string
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	if err == nil && validOwnerName(g.Name) {
		name = g.Name
	}
	a.groupNames[gid] = name
	return name
}

func (a *accounts) userID(name string) (uint32, bool) {
	if r, ok := a.userIDs[name]; ok {
		return r.id, r.ok
	}
	var r idAnswer
	u, err := user.Lookup(name)
	if err == nil {
		if id, perr := strconv.ParseUint(u.Uid, 10, 32); perr == nil {
			r = idAnswer{uint32(id), true}
		}
	}
	a.userIDs[name] = r
	return r.id, r.ok
}

func (a *accounts) groupID(name string) (uint32, bool) {
	if r, ok := a.groupIDs[name]; ok {
		return r.id, r.ok
	}
	var r idAnswer
	g, err := user.LookupGroup(name)
	if err == nil {
		if id, perr := strconv.ParseUint(g.Gid, 10, 32); perr == nil {
			r = idAnswer{uint32(id), true}
		}
	}
	a.groupIDs[name] = r
	return r.id, r.ok
}
