package gateway

// presenceRoutes registers the presence endpoints. (Filled in with the presence work.)
func (s *Server) presenceRoutes() {}
