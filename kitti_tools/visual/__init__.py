"""Pictures of KITTI-layout frames and evaluation reports (numpy, Pillow, matplotlib, open3d)."""
