package groups

// SetAfterAppend makes s call f between the log append of each change and
// its commit. Set it before s is used.
func SetAfterAppend(s *Store, f func(group string, seq uint64)) { s.afterAppend = f }

// CacheOn reports whether Run has turned s's cache on.
func CacheOn(s *Store) bool {
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	return s.cache.on
}

// CacheSize returns the number of groups s caches and their weight.
func CacheSize(s *Store) (groups, weight int) { return s.cache.size() }

// Invalidations is the invalidation generation of group's stripe in s's
// cache: it grows each time s drops the group's entry (a change made or
// announced). Until a group changes, every stripe has the same one.
func Invalidations(s *Store, group string) uint64 { return s.cache.stamp(group) }
