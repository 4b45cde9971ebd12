module github.com/xdpcluster/xdpcluster

go 1.26.8
