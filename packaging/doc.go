// Package packaging holds the tests of what ships: `make install`, the
// .deb that `make package` builds with nfpm (packaging/nfpm.yaml), and the
// README's quickstart followed with the installed package on network
// namespaces. It has no code of its own; the files beside it are the
// package's configuration, maintainer scripts and shipped example config.
package packaging
