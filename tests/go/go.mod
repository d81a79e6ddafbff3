module taskfold.test/go-interop

go 1.26.0

require github.com/taskcluster/taskcluster/v97 v97.0.1

require (
	github.com/cenkalti/backoff/v3 v3.2.2 // indirect
	github.com/fatih/camelcase v1.0.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/pborman/uuid v1.2.1 // indirect
	github.com/taskcluster/httpbackoff/v3 v3.1.0 // indirect
	github.com/taskcluster/slugid-go v1.1.0 // indirect
	github.com/taskcluster/taskcluster-lib-urls v13.0.1+incompatible // indirect
	github.com/tent/hawk-go v0.0.0-20161026210932-d341ea318957 // indirect
)
