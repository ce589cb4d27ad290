# PGNet's cross loss scheme on Faster R-CNN R50-FPN (1x, COCO): the RPN (the guidance branch of
# the paper's cross scheme) regresses with CDIoU, the RoI head (the main branch) with GIoU.
# Both work on decoded boxes (reg_decoded_bbox=True). Everything else is the stock config.
#
# Loss names in the mmdet scope: bare 'CDIoULoss' is mmpgnet's (mmdet has no such name), while a
# bare 'GIoULoss' would be mmdet's own class, so ours is named with its scope: 'mmpgnet.GIoULoss'.
# Loss weights follow mmdet's faster-rcnn_r50_fpn_giou_1x_coco.py (10.0 on IoU-type losses).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmpgnet'], allow_failed_imports=False)

model = dict(
    rpn_head=dict(
        reg_decoded_bbox=True,
        loss_bbox=dict(_delete_=True, type='CDIoULoss', loss_weight=10.0)),
    roi_head=dict(
        bbox_head=dict(
            reg_decoded_bbox=True,
            loss_bbox=dict(_delete_=True, type='mmpgnet.GIoULoss', loss_weight=10.0))))
