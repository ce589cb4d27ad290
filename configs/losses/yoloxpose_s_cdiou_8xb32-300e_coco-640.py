# YOLOX-Pose-s (COCO, 640) with mmpgnet's CDIoU loss on its box branch, in place of the stock
# IoULoss(mode='square'). YOLOXPoseHead calls loss_bbox(pred, target) with two arguments and
# divides by the number of positives itself, hence reduction='sum'; the weight stays the stock 5.0.
# Everything else is the stock config. In the mmpose scope the bare name 'CDIoULoss' is mmpgnet's.
_base_ = ['mmpose::body_2d_keypoint/yoloxpose/coco/yoloxpose_s_8xb32-300e_coco-640.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

model = dict(
    head=dict(
        loss_bbox=dict(_delete_=True, type='CDIoULoss', reduction='sum', loss_weight=5.0)))
