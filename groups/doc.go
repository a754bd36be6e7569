// Package groups keeps group membership and roles in Postgres and places
// every membership change in the message log, so that the message path can
// ask who was a member at any point of a group's conversation.
//
// # Model
//
// A group has an id made by the server ("g" followed by letters and digits,
// safe in URLs and NATS subjects), a name, and members, each an admin or a
// plain member. The rules:
//
//   - The creator of a group is its admin; the users it names are members.
//   - Only members see a group. Anyone else, for an existing group or not,
//     gets ErrNoGroup (chat.ErrNotFound), never a refusal, so that a group's
//     existence does not leak.
//   - Only admins add members or remove others (ErrNotAdmin, chat.ErrForbidden,
//     for a plain member). Any member removes itself: it leaves.
//   - When the last admin leaves, the longest-standing remaining member (the
//     earliest joined_seq, then the smallest user id) becomes admin in the
//     same transaction. So a group that has members always has an admin.
//   - When the last member leaves, the group stays in Postgres with no
//     members: its messages stay in the log, and the history of memberships
//     still answers who could read them. Such a group is visible to nobody
//     and nobody can join it again (no one is left to add members); it
//     answers ErrNoGroup like a group that never existed.
//   - Limits: Config.MaxMembers members (creator included; ErrTooMany,
//     chat.ErrTooLarge), names of 1 to Config.MaxNameLen characters
//     (ErrBadName), user lists of valid, distinct user ids (ErrBadUsers).
//     Adding an existing member changes nothing and records nothing.
//
// # Positions in the message log
//
// Every change (create, add, remove, leave) is first appended to the
// group's subject in the message log (natsx.Group) as a record with the
// headers Jc-Kind: member and Jc-From: <actor> and a Change as its JSON body:
// the group's own account of its changes, for backend services. It is
// followed by a membership notice in the inbox (natsx.Inbox) of each user
// the change adds or removes (Jc-Kind: member, Jc-Group: <group>, Jc-Event:
// joined or left, Jc-From: <actor>), which package delivery reads to start
// and stop a device's reading of the group. Each user's joined_seq or
// left_seq, written in the same Postgres transaction, is the sequence of its
// own notice, so what a device reads and what MembersAt answers agree
// exactly. A user is a member at log position S when joined_seq <= S and it
// has not left, or left at a left_seq > S.
//
// The transaction holds a per-group advisory lock from before the first
// append until its commit, so a group's changes are applied in log order;
// MembersAt and WasMember take that lock in shared mode, so they wait for a
// change whose record is already in the log but not yet committed, and
// their answer for a position S is final.
//
// When an append fails the change is refused (ErrUnavailable) and nothing
// changes. When the appends succeed but Postgres then fails, the record on
// the group's subject describes a change that never happened: Postgres is
// the truth, and readers of the log must check membership here, not replay
// records. Inbox notices of such a change are retracted (a left notice for
// each user it added, a joined notice for each it removed), best effort,
// unless the commit failed with an unknown outcome (the connection broke
// during COMMIT), which is logged as an error.
//
// # Cache
//
// IsMember and Members, on the send path, are answered from an in-memory
// cache of current memberships, loaded from Postgres on a miss. Once a
// change commits, the writer drops its own entry before returning (so a
// member removed through this Store fails IsMember at once) and announces
// the change on the core NATS subject natsx.GroupsChanged(group); every
// Store, subscribed once to all groups, drops its entry when the
// announcement arrives. A load that overlaps an invalidation of its group
// reads again rather than installing what it read before the change.
// Entries are trusted only while the Store is subscribed and connected, and
// are reloaded after a NATS reconnect, after a dropped announcement, and
// after Config.CacheTTL. The cache is bounded by Config.CacheMembers
// (members summed over cached groups, least recently used dropped first), so
// memory does not grow with groups nobody asks about.
//
// When Postgres does not answer, IsMember and Members serve a cached entry
// even when it is no longer trusted; without one they fail with
// ErrUnavailable, as every other method does.
//
// # Concurrency
//
// A Store is safe for concurrent use. Membership changes of one group are
// serialised by a Postgres advisory lock held across the log append and the
// commit, so concurrent adds, removals and leaves on several nodes keep roles
// consistent; changes of different groups do not wait for each other.
// Concurrent cache misses of one group share one Postgres load, run in a
// goroutine of its own (singleflight) and bounded by Config.QueryTimeout, so
// a caller whose context ends stops waiting without cancelling the load for
// the others. The only other goroutine is the callback of the NATS
// subscription made by Run, owned by the NATS connection; it only drops
// cache entries.
//
// # Lifecycle
//
// New checks the configuration and connects to nothing. Run subscribes to
// the change announcements, enables the cache, and blocks until its context
// ends; then it unsubscribes, empties and disables the cache, and returns
// nil. Without Run every lookup goes to Postgres (correct, but slower), so
// Stores that are never Run may be used in tools. Run may be called again
// after it returned, but not twice at once.
package groups
