package fleet

import (
	"github.com/supernode/supernode/cluster"
	"github.com/supernode/supernode/endpoint"
	"github.com/supernode/supernode/metrics"
)

// Place is api.Config.Place: for /v1/ice-servers, the URLs of the member a
// call is placed on and the REST id that names the call and that member
// (CallUser), or the user id as it is when no call is given (the user id
// is then placed as a call would be). A fleet of one, or a fleet where
// nobody is eligible or the owner gossips no URLs, serves the call here.
func (f *Fleet) Place(call, zone, user string) (urls []string, id string, err error) {
	s := f.state.Load()
	if s.c == nil {
		if call == "" {
			return s.urls, user, nil
		}
		id, err = cluster.CallUser(call, zone, "", user)
		return s.urls, id, err
	}
	key := call
	if key == "" {
		key = user
	}
	owner, out := s.c.Owner(key, zone)
	result := metrics.PlacementRemote
	urls = endpoint.MemberURLs(owner.Meta)
	switch {
	case out == cluster.NoMember || len(urls) == 0:
		result, owner, urls = metrics.PlacementFallback, cluster.Node{ID: s.c.ID()}, s.urls
	case owner.Self:
		result, urls = metrics.PlacementLocal, s.urls
	}
	id = user
	if call != "" {
		if id, err = cluster.CallUser(call, zone, owner.ID, user); err != nil {
			return nil, "", err
		}
	}
	f.cfg.Metrics.Placements.For(result).Inc()
	return urls, id, nil
}
