# PGNet pose (ResNet-50 + CFFM + deconv/1x1 heatmap head) COCO 256x192 with norm: gn in the
# CFFM neck. The backbone keeps BN (its ImageNet checkpoint has BN keys) and MMPose's HeatmapHead
# builds its deconv BN itself, so the neck is where the ablated norm goes.
_base_ = ['../pgnet/pgnet_res50_cffm_8xb64-210e_coco-256x192.py']

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(neck=dict(norm_cfg=dict(_delete_=True, **norm_cfg)))  # replace the base's norm
