package groups

import (
	"container/list"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/jetchat/jetchat/internal/chat"
)

// stripes is the number of invalidation generations: a load of a group is
// discarded when its group's stripe was invalidated meanwhile, so more
// stripes mean fewer needless reloads under churn.
const stripes = 256

// entry is the current membership of one group, as loaded from Postgres.
// It is immutable once built.
type entry struct {
	group   string
	members []chat.Member // in join order, as Get returns them
	sorted  []string      // the member ids, sorted, for has
	epoch   uint64        // the Store's epoch when the load began
	loaded  time.Time     // when the load began
}

func newEntry(group string, members []chat.Member, epoch uint64, loaded time.Time) *entry {
	e := &entry{group: group, members: members, epoch: epoch, loaded: loaded}
	e.sorted = make([]string, len(members))
	for i, m := range members {
		e.sorted[i] = m.User
	}
	slices.Sort(e.sorted)
	return e
}

// has reports whether user is a member.
func (e *entry) has(user string) bool {
	_, ok := slices.BinarySearch(e.sorted, user)
	return ok
}

// weight is what e counts against the cache's bound.
func (e *entry) weight() int { return max(1, len(e.members)) }

// cache is a bounded LRU of group memberships with invalidation generations.
// Its methods are safe for concurrent use.
type cache struct {
	max  int
	ttl  time.Duration
	seed maphash.Seed

	mu      sync.Mutex
	on      bool // entries may be installed: announcements are subscribed
	weight  int
	lru     list.List // of *entry, most recently used first
	byGroup map[string]*list.Element
	gens    [stripes]uint64
}

func newCache(maxWeight int, ttl time.Duration) *cache {
	return &cache{max: maxWeight, ttl: ttl, seed: maphash.MakeSeed(), byGroup: map[string]*list.Element{}}
}

func (c *cache) stripe(group string) int {
	return int(maphash.String(c.seed, group) % stripes)
}

// get returns group's entry, if any, and whether it may be trusted: the cache
// is on, the Store is live (subscribed and connected) at epoch, the entry was
// loaded in that epoch, and it is younger than the TTL. An untrusted entry is
// still returned, for use while Postgres fails.
func (c *cache) get(group string, epoch uint64, live bool, now time.Time) (e *entry, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.byGroup[group]
	if el == nil {
		return nil, false
	}
	c.lru.MoveToFront(el)
	e = el.Value.(*entry)
	return e, c.on && live && e.epoch == epoch && now.Sub(e.loaded) < c.ttl
}

// stamp returns the generation of group's stripe, to be passed to put.
func (c *cache) stamp(group string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gens[c.stripe(group)]
}

// put installs e unless its group's stripe was invalidated since stamp
// returned gen; it reports false in that case, when e may predate a change.
// While the cache is off, nothing is installed.
func (c *cache) put(e *entry, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gens[c.stripe(e.group)] != gen {
		return false
	}
	if !c.on {
		return true
	}
	if el := c.byGroup[e.group]; el != nil {
		c.weight -= el.Value.(*entry).weight()
		el.Value = e
		c.lru.MoveToFront(el)
	} else {
		c.byGroup[e.group] = c.lru.PushFront(e)
	}
	c.weight += e.weight()
	for c.weight > c.max && c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
	return true
}

// drop forgets group's entry and invalidates loads of it in progress.
func (c *cache) drop(group string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens[c.stripe(group)]++
	if el := c.byGroup[group]; el != nil {
		c.remove(el)
	}
}

// setOn turns the cache on or off; either way it starts empty.
func (c *cache) setOn(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = on
	for i := range c.gens {
		c.gens[i]++
	}
	c.lru.Init()
	clear(c.byGroup)
	c.weight = 0
}

// size returns the number of cached groups and their weight.
func (c *cache) size() (groups, weight int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.weight
}

func (c *cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*entry)
	delete(c.byGroup, e.group)
	c.weight -= e.weight()
}
