"""molediff.pointcloud"""
