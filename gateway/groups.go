package gateway

// groupsRoutes registers the groups endpoints. (Filled in with the groups work.)
func (s *Server) groupsRoutes() {}
