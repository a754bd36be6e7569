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
