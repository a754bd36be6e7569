package gateway

// mediaRoutes registers the media endpoints. (Filled in with the media work.)
func (s *Server) mediaRoutes() {}
